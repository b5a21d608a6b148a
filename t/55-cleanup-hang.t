#!/usr/bin/perl
# bytemark_cache_cleanup when MongoDB stops answering in the middle of a
# run: the run does not hold the cleanup lock for ever.
#   - default driver limits: the hung run ends by the driver's socket
#     timeout (it follows the budgets), and later runs happen while MongoDB
#     is still frozen, and again after it thawed;
#   - a URI that lets a call hang for a minute (socketTimeoutMS raised by the
#     operator): the lock of the hung run is taken over after a few driver
#     limits, and a later run happens.

use strict;
use warnings;

use Test::More;
use JSON::PP;
use Time::HiRes qw(time sleep);
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(cache_entry wait_until now_ms);
use Bytemark::Load qw(http_raw freeze);

my $JSON = JSON::PP->new->utf8->canonical;

my $t = Bytemark::Test->new(mongo => 1);

sub runs {
    my $r = http_raw($t->nginx_port, '/status');
    return $r->{status} == 200 ? $JSON->decode($r->{body})->{bytemark_cache_cleanup_runs_total} // 0 : -1;
}

sub body {
    my ($uri) = @_;
    return "bytemark_mongo_uri $uri;
            bytemark_mongo_collection %%MONGO_COLL%%;
            bytemark_cache_cleanup interval=1s max_age=1h;
            server { listen 127.0.0.1:%%PORT%%; location / { return 200; }
                     location = /status { bytemark_status; } }";
}

sub uri_with {
    my ($opt) = @_;
    my $u = $t->mongo_uri;
    return $u . ($u =~ /\?/ ? '&' : '?') . $opt;
}

# --- default driver limits -------------------------------------------------------

$t->mongo_insert([ cache_entry(1, ts => now_ms() - 2 * 3600_000), cache_entry(2) ]);
$t->start_nginx(body('%%MONGO_URI%%'), workers => 2);

ok wait_until(sub { $t->mongo_count({}) == 1 }, 10), 'a run deletes the old entry';
ok wait_until(sub { runs() >= 2 }, 10), 'runs follow each other';

freeze($t, 'mongo');
my $r0 = runs();
ok wait_until(sub { runs() >= $r0 + 2 }, 15),
    sprintf('MongoDB frozen: runs still end and start (%d -> %d)', $r0, runs());
ok $t->{paused}{mongo}, 'MongoDB is still frozen';
like $t->error_log, qr/cache cleanup failed after \d+ ms/, 'the failed runs are logged';
$t->resume_mongo;

$t->mongo_insert([ cache_entry(3, ts => now_ms() - 2 * 3600_000) ]);
ok wait_until(sub { !$t->mongo_count({ user_id => 3 }) }, 20), 'after the thaw, a run deletes old entries again';
$t->stop_nginx;

# --- a call may hang for a minute: the lock is taken over -----------------------

# The driver must not learn of the freeze before a run starts (its monitor, a
# server selection that gives up): then runs fail at once and none hangs.
$t->start_nginx(body(uri_with('socketTimeoutMS=60000&heartbeatFrequencyMS=60000'
                              . '&serverSelectionTimeoutMS=60000')), workers => 2);
ok wait_until(sub { runs() >= 1 }, 10), 'runs happen';

freeze($t, 'mongo');
my $frozen = time;
ok wait_until(sub { $t->error_log =~ /cache cleanup lock taken over from process \d+, whose run started \d+ ms ago/ }, 15),
    sprintf('MongoDB frozen, a run hangs: its lock is taken over (%.1fs)', time - $frozen);
ok $t->{paused}{mongo}, 'MongoDB was frozen all along';
$t->resume_mongo;

$t->mongo_insert([ cache_entry(4, ts => now_ms() - 2 * 3600_000) ]);
ok wait_until(sub { !$t->mongo_count({ user_id => 4 }) }, 30), 'after the thaw, a run deletes old entries again';
my $r1 = runs();
ok wait_until(sub { runs() > $r1 }, 10), 'and runs go on';
$t->stop_nginx;

done_testing;
