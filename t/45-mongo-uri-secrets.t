#!/usr/bin/perl
# The MongoDB URI's credentials never reach a log (SPEC 5, issue 24 item 2).
#
# A password with an unescaped ':' makes the driver refuse the URI with a
# message that repeats the password; nginx -t, a refused reload and the
# error log must show the directive and the problem, never the password.
# A valid URI whose credentials the server refuses (the stand-in and
# FerretDB never accept them), or whose host cannot be reached, must not
# put the password in the error log either, as written or percent-decoded.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass wait_until);

my $t = Bytemark::Test->new(mysql => 1, mongo => 1);
plan skip_all => 'needs the local stand-in or mongod' unless $t->mongo_controllable;

my $port = $t->mongo_port;
my $dead = $t->free_port;

# every form of each password that must never be seen
my $PW      = 'Tr0ub4dor:3';
my $PW_ENC  = 'Tr0ub4dor%3A3';
my $PW2     = 'Zx9@q/w:Secret';        # valid when percent-encoded below
my $PW2_ENC = 'Zx9%40q%2Fw%3ASecret';
my @SECRETS = ($PW, $PW_ENC, 'Tr0ub4dor', $PW2, $PW2_ENC, 'Zx9', 'Secret');

sub body {
    my ($uri) = @_;
    return qq{
        bytemark_mongo_uri "$uri";
        bytemark_mongo_collection %%MONGO_COLL%%;
        bytemark_mysql %%MYSQL%%;
        server {
            listen 127.0.0.1:%%PORT%%;
            location = /t {
                bytemark_user_id \$arg_user_id;
                bytemark_tickets;
            }
            location = /p {
                bytemark_user_id \$arg_user_id;
                bytemark_purge;
            }
        }
    };
}

sub no_secret {
    my ($text, $where) = @_;
    for my $s (@SECRETS) {
        unlike $text, qr/\Q$s\E/, "$where: no \"$s\"";
    }
}

# --- nginx -t: an unescaped ':' in the password ------------------------------------

my ($rc, $out) = $t->nginx_test(body("mongodb://app:$PW\@127.0.0.1:$port/?authSource=admin"));
isnt $rc, 0, 'nginx -t refuses the URI';
like $out, qr/"bytemark_mongo_uri" is not a valid MongoDB connection string: .*unescaped/,
    'the message names the directive and the problem';
like $out, qr/Password "\*\*\*"/, 'the password is replaced by ***';
no_secret($out, 'nginx -t');

# a percent-encoded password after an unescaped ':'
($rc, $out) = $t->nginx_test(body("mongodb://a:b:$PW2_ENC\@127.0.0.1:$port/"));
isnt $rc, 0, 'nginx -t refuses a second malformed userinfo';
no_secret($out, 'nginx -t, second URI');

# a password longer than the driver's message: the piece left at its end too
my $LONG = 'Lq' . ('z' x 600) . ':9';
($rc, $out) = $t->nginx_test(body("mongodb://app:$LONG\@127.0.0.1:$port/"));
isnt $rc, 0, 'nginx -t refuses a URI with a long malformed password';
like $out, qr/Password "\*\*\*/, 'the message is cut short where the password was';
unlike $out, qr/Lqzzz/, 'no piece of the long password';

# --- a running nginx: refused credentials, then an unreachable host ----------------

$t->start_nginx(body("mongodb://app:$PW_ENC\@127.0.0.1:$port/?authSource=admin"));
add_pass($t, user => 5, uuid => uuid(5));

my $r = $t->get('/t?user_id=5');
is $r->{status}, 200, 'credentials refused: MySQL answers';
is $t->http('DELETE', '/p?user_id=5')->{status}, 503, 'credentials refused: purge is 503';

# a reload to a URI nginx refuses: the master logs why, and keeps running
my $bad = $t->nginx_conf(body("mongodb://app:$PW\@127.0.0.1:$port/"));
open my $fh, '>', $t->dir . '/nginx.conf' or die $!;
print $fh $bad;
close $fh;
kill 'HUP', $t->nginx_pid;
ok wait_until(sub { $t->error_log =~ /is not a valid MongoDB connection string/ }, 10),
    'a refused reload is logged';
like $t->error_log, qr/\[emerg\] .*"bytemark_mongo_uri" is not a valid MongoDB connection string: Password "\*\*\*"/,
    'naming the directive and the problem';

# a valid URI to a host that refuses connections, with a percent-encoded password
$t->reload_nginx(body("mongodb://app:$PW2_ENC\@127.0.0.1:$dead/?serverSelectionTimeoutMS=300&connectTimeoutMS=300"));
$r = $t->get('/t?user_id=5');
is $r->{status}, 200, 'MongoDB unreachable: MySQL answers';
is $t->http('DELETE', '/p?user_id=5')->{status}, 503, 'MongoDB unreachable: purge is 503';

$t->stop_nginx;
my $log = $t->error_log;
like $log, qr/bytemark: mongo .*failed/, 'the MongoDB failures are logged';
no_secret($log, 'error log');
no_secret($t->access_log, 'access log');

done_testing;
