#!/usr/bin/perl
# Secrets in files (issue 26): bytemark_mysql password_file= and
# bytemark_mongo_uri_file are read when the configuration is read (start,
# nginx -t, every reload), so nginx.conf holds no secret and nginx -T prints
# none. A file that cannot be used fails nginx -t with a message naming the
# directive and the file, never its content; the secrets never reach a log.
#
# The MongoDB URI from the file carries credentials that neither the
# stand-in nor FerretDB accepts (see t/41): every MongoDB call fails on the
# way in, where the driver is most likely to repeat them, and lookups fall
# back to MySQL. A URI without credentials, from a file, is served.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass cache_entry body_both);

my $t = Bytemark::Test->new(mysql => 1, mongo => 1);
my $dir = $t->dir;

my $MYSQL_PW = $t->mysql_password;    # s3cret-pw
my $NEW_PW   = 'N3w-Secret-Pw';
my $WRONG_PW = 'Wr0ng-Secret-Pw';
my $MONGO_PW = 'Mongo-File-Pw-5';
my $mport = $t->mongo_port;

sub spew {
    my ($file, $text) = @_;
    open my $fh, '>', $file or die "$file: $!";
    print {$fh} $text;
    close $fh;
    chmod 0600, $file;
}

sub mysql_line {
    my ($pwfile) = @_;
    return 'host=127.0.0.1 port=%%MYSQL_PORT%% user=' . $t->mysql_user
         . " password_file=$pwfile database=portal";
}

sub body {
    my (%o) = @_;
    my $mongo = $o{uri_file} ? "bytemark_mongo_uri_file $o{uri_file};\n" : '';
    $mongo .= "bytemark_mongo_collection %%MONGO_COLL%%;\n" if $o{uri_file};
    return body_both(no_mongo => 1, no_mysql => 1,
                     loc => 'bytemark_mongo_timeout 3s; bytemark_mysql_timeout 3s;',
                     http => $mongo . ($o{pwfile} ? 'bytemark_mysql ' . mysql_line($o{pwfile}) . ";\n" : '')
                           . ($o{extra} // ''));
}

sub nginx_T {
    my $out = qx{@{[ $t->nginx_bin ]} -T -p $dir/ -c $dir/nginx.conf 2>&1};
    return ($? >> 8, $out);
}

add_pass($t, user => 5, uuid => uuid(5));
add_pass($t, user => 6, uuid => uuid(6));
$t->mongo_insert(cache_entry(6, passes => [ { pass_uuid => uuid(66), status => 'cached' } ]));

# --- the MySQL password from a file; the MongoDB URI, with credentials, too
spew("$dir/mysql.pw", "$MYSQL_PW\n");
spew("$dir/mongo.uri", "mongodb://bmuser:$MONGO_PW\@127.0.0.1:$mport/?authSource=admin\n");
$t->start_nginx(body(pwfile => "$dir/mysql.pw", uri_file => "$dir/mongo.uri"));

my $r = $t->get('/t?user_id=5');
is $r->{status}, 200, 'password from the file: 200';
is $r->{headers}{'x-bytemark-source'}, 'mysql', 'from MySQL (MongoDB refuses the credentials)';
like $r->{content}, qr/\Q${\ uuid(5)}\E/, 'with the pass';
like $t->error_log, qr/bytemark: mongo .* failed/, 'the MongoDB call failed and was logged';

my ($rc, $out) = nginx_T();
is $rc, 0, 'nginx -T runs';
like $out, qr/password_file=\Q$dir\E\/mysql\.pw/, 'nginx -T shows where the password is';
like $out, qr/bytemark_mongo_uri_file \Q$dir\E\/mongo\.uri/, 'and where the URI is';
unlike $out, qr/\Q$MYSQL_PW\E/, 'nginx -T prints no MySQL password';
unlike $out, qr/\Q$MONGO_PW\E|bmuser/, 'nginx -T prints no MongoDB credentials';

# --- a reload reads the files again
$t->sql("ALTER USER '" . $t->mysql_user . "'\@'127.0.0.1' IDENTIFIED BY '$NEW_PW'");
spew("$dir/mysql.pw", "$WRONG_PW\n");
$t->reload_nginx;
$r = $t->get('/t?user_id=5');
is $r->{status}, 503, 'reload with a wrong password in the file: the new workers use it (503)';
like $t->error_log, qr/Access denied for user 'bytemark'/, 'MySQL refused it';

spew("$dir/mysql.pw", "$NEW_PW\r\n");
$t->reload_nginx;
$r = $t->get('/t?user_id=5');
is $r->{status}, 200, 'reload after the file got the new password (CRLF stripped): 200';
is $r->{headers}{'x-bytemark-source'}, 'mysql', 'from MySQL';
$t->stop_nginx;

# --- a URI without credentials, from a file, serves from MongoDB
spew("$dir/plain.uri", "mongodb://127.0.0.1:$mport/\n");
$t->start_nginx(body(pwfile => "$dir/mysql.pw", uri_file => "$dir/plain.uri"));
$r = $t->get('/t?user_id=6');
is $r->{status}, 200, 'URI from a file: 200';
is $r->{headers}{'x-bytemark-source'}, 'mongo', 'from MongoDB';
like $r->{content}, qr/\Q${\ uuid(66)}\E/, 'the cached pass';
$t->stop_nginx;

# --- nginx -t
{
    my $try = sub {
        my ($body, $re, $name) = @_;
        my ($rc, $out) = $t->nginx_test($body);
        isnt $rc, 0, "nginx -t fails: $name";
        like $out, $re, "nginx -t says: $name";
        unlike $out, qr/\Q$MYSQL_PW\E|\Q$NEW_PW\E|\Q$MONGO_PW\E/, "and shows no secret: $name";
    };
    $try->(body(pwfile => "$dir/missing.pw"),
           qr/\[emerg\] .*"bytemark_mysql password_file=" cannot open "\Q$dir\E\/missing\.pw" \(2: No such file or directory\)/,
           'a missing password file');
    spew("$dir/empty.pw", "\n");
    $try->(body(pwfile => "$dir/empty.pw"),
           qr/"bytemark_mysql password_file=" "\Q$dir\E\/empty\.pw" is empty/, 'an empty password file');
    spew("$dir/two.pw", "$NEW_PW\nsecond line\n");
    $try->(body(pwfile => "$dir/two.pw"),
           qr/"\Q$dir\E\/two\.pw" must hold one line/, 'a password file of two lines');
    $try->(body(extra => 'bytemark_mysql ' . mysql_line("$dir/mysql.pw") . " password=x;\n"),
           qr/"bytemark_mysql" directive takes "password=" or "password_file=", not both/,
           'password= and password_file= together');
    $try->(body(pwfile => "$dir/mysql.pw", uri_file => "$dir/nope.uri"),
           qr/"bytemark_mongo_uri_file" cannot open "\Q$dir\E\/nope\.uri"/, 'a missing URI file');
    spew("$dir/bad.uri", "mongodb://bmuser:$MONGO_PW\@/\n");
    $try->(body(pwfile => "$dir/mysql.pw", uri_file => "$dir/bad.uri"),
           qr/"bytemark_mongo_uri_file" "\Q$dir\E\/bad\.uri" does not hold a valid MongoDB connection string/,
           'a URI file that is not a URI');
    $try->(body(pwfile => "$dir/mysql.pw", uri_file => "$dir/plain.uri",
                extra => "bytemark_mongo_uri mongodb://127.0.0.1:$mport/;\n"),
           qr/"bytemark_mongo_uri" directive conflicts with "bytemark_mongo_uri_file"/,
           'bytemark_mongo_uri and bytemark_mongo_uri_file');
    my $relative = body(pwfile => 'mysql.pw');    # from nginx's configuration prefix
    my ($rc, $out) = $t->nginx_test($relative);
    is $rc, 0, 'a relative path is taken from the configuration prefix' or diag $out;
}

# --- no secret in any log
{
    my $all = $t->error_log . $t->access_log;
    for my $s ($MYSQL_PW, $NEW_PW, $WRONG_PW, $MONGO_PW) {
        unlike $all, qr/\Q$s\E/, "'$s' is in no log";
    }
}

done_testing;
