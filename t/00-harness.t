#!/usr/bin/perl
# The test harness itself (t/lib/Bytemark/Test.pm): servers start, SQL and
# MongoDB helpers round-trip with types, restarts keep what they should, and
# nothing is left running or on disk afterwards.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use IO::Socket::INET;
use Bytemark::Test;

my $t0 = time;
my $t = Bytemark::Test->new(mysql => 1, mongo => 1);
note sprintf 'new(mysql => 1, mongo => 1) took %.2fs', time - $t0;
my $dir = $t->dir;
ok -d $dir, 'temp dir exists';
like $t->mongo_kind, qr/^(standin|ferretdb|mongod|external)$/, 'mongo kind ' . $t->mongo_kind;

# --- MariaDB --------------------------------------------------------------

is $t->mysql_directive,
   'host=127.0.0.1 port=' . $t->mysql_port . ' user=bytemark password=s3cret-pw database=portal',
   'mysql_directive';
is $t->mysql_directive(pool_size => 4),
   $t->mysql_directive . ' pool_size=4', 'mysql_directive with extras';
like $t->mysql_directive(socket => 1), qr/^socket=\Q$dir\E\/mysql\.sock user=bytemark /,
   'mysql_directive socket form';

my $cols = $t->sql(q{SELECT COLUMN_NAME FROM information_schema.COLUMNS
                     WHERE TABLE_SCHEMA = 'portal' AND TABLE_NAME = 'bytemark_pass'
                     ORDER BY ORDINAL_POSITION});
is_deeply [ map { $_->[0] } @$cols ],
   [qw(id user_id pass_uuid version status free_ticket_status payload payload_hash
       timestamp created_on modified_on)], 'schema loaded';

$t->load_sample;
my $rows = $t->sql('SELECT user_id, COUNT(*), SUM(version = 4) FROM bytemark_pass GROUP BY user_id ORDER BY user_id');
is_deeply $rows, [[777, 1, 0], [12345, 3, 1]], 'sample: 12345 has 3 passes (one v4), 777 has 1';
is_deeply $t->sql(q{SELECT COUNT(*) FROM bytemark_pass WHERE pass_uuid <> LOWER(pass_uuid)
                    OR pass_uuid NOT REGEXP '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'}),
   [[0]], 'sample uuids are canonical lower case';
is_deeply $t->sql(q{SELECT COUNT(*) FROM bytemark_pass WHERE timestamp < 1000000000000}),
   [[0]], 'sample timestamps are in ms';

is_deeply $t->sql("SELECT CURRENT_USER(), 'a\\tb', NULL", as_user => 1),
   [['bytemark@127.0.0.1', "a\tb", 'NULL']], 'sql as the app user over TCP; tab unescaped';
ok !eval { $t->sql('SELECT * FROM no_such_table'); 1 }, 'sql dies on error';
like $@, qr/no_such_table/, '... with the server message';

$t->sql(q{INSERT INTO bytemark_pass (user_id, pass_uuid, status, timestamp)
          VALUES (1, '00000000-0000-4000-8000-000000000001', 'active', 1)});
my $pid1 = $t->mysql_pid;
$t->stop_mysql;
ok !kill(0, $pid1), 'stop_mysql: server gone';
$t->start_mysql;
is_deeply $t->sql('SELECT COUNT(*) FROM bytemark_pass'), [[5]], 'restart keeps the data';

# A paused server accepts TCP connections (the kernel does) but says nothing.
$t->pause_mysql;
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->mysql_port, Timeout => 2);
ok $s, 'paused mysql: connect succeeds';
my $got = '';
{
    local $SIG{ALRM} = sub { die "alarm\n" };
    alarm 1;
    eval { sysread $s, $got, 100; 1 };
    alarm 0;
}
is length($got), 0, 'paused mysql: no handshake';
close $s;
$t->resume_mysql;
is_deeply $t->sql('SELECT 1'), [[1]], 'resumed mysql answers';

# --- MongoDB --------------------------------------------------------------

like $t->mongo_uri, qr{^mongodb://}, 'mongo_uri';
is $t->mongo_coll, 'bytemark_tickets_cache', 'mongo_coll';
if ($t->mongo_kind eq 'external') {
    like $t->mongo_db, qr/^bt_\d+_\d+$/, 'per-test database on an external server';
} else {
    is $t->mongo_db, 'cache', 'mongo_db';
}

$t->mongo_insert({
    user_id   => { '$numberLong' => '12345' },
    timestamp => { '$numberDouble' => '1732200000000.0' },
    small     => 7,
    big       => 5000000000,
    ratio     => { '$numberDouble' => '1.5' },
    passes    => [ { pass_uuid => 'a', status => 'active', payload => { x => [1, 'two', undef] } } ],
    flag      => JSON::PP::true,
});
$t->mongo_insert([ { user_id => 777 }, { user_id => 778 } ]);
my @docs = $t->mongo_find({ user_id => 12345 });
is scalar @docs, 1, 'find by int matches an int64 user_id';
my $d = $docs[0];
is_deeply $d->{user_id},   { '$numberLong'   => '12345' }, 'int64 kept';
like $d->{timestamp}{'$numberDouble'} // '', qr/^1\.7322e\+12$|^1732200000000(\.0)?$/, 'double kept';
is_deeply $d->{small},     { '$numberInt'    => '7' },      'plain small int -> int32';
is_deeply $d->{big},       { '$numberLong'   => '5000000000' }, 'plain big int -> int64';
is_deeply $d->{ratio},     { '$numberDouble' => '1.5' },    'double 1.5';
ok $d->{flag}, 'boolean';
ok exists $d->{_id}{'$oid'}, '_id is an ObjectId';
is_deeply $t->plain($d->{passes}),
   [ { pass_uuid => 'a', status => 'active', payload => { x => [1, 'two', undef] } } ],
   'nested document round-trips; plain() unwraps numbers';
is $t->plain($d->{user_id}), 12345, 'plain(int64)';

ok !eval { $t->mongo_insert({ user_id => 777 }); 1 }, 'unique index on user_id is in place';
like $@, qr/duplicate key|E11000/i, '... duplicate key error';

is $t->mongo_count({}), 3, 'mongo_count';
is $t->mongo_update({ user_id => 778 }, { '$set' => { timestamp => 1 } }), 1, 'mongo_update';
is $t->plain(($t->mongo_find({ user_id => 778 }))[0]{timestamp}), 1, '... applied';
is $t->mongo_delete({ user_id => { '$in' => [777, 778] } }), 2, 'mongo_delete returns the count';
is scalar(my @left = $t->mongo_find({})), 1, 'one document left';

my $conns = $t->mongo_connections;
like $conns, qr/^\d+$/, "mongo_connections ($conns)";

if ($t->mongo_kind ne 'external') {
    my $mpid = $t->mongo_pid;
    $t->stop_mongo;
    ok !kill(0, $mpid), 'stop_mongo: server gone';
    $t->start_mongo;
    ok eval { $t->mongo_insert({ user_id => 1 }); 1 }, 'restarted mongo takes writes' or diag $@;
    ok !eval { $t->mongo_insert({ user_id => 1 }); 1 }, 'unique index re-created after restart';
    $t->pause_mongo;
    $t->resume_mongo;
    ok eval { $t->mongo_find({}); 1 }, 'paused and resumed mongo answers';
}

# --- nginx ----------------------------------------------------------------

my $plain = <<'EOF';
    log_format t '$request_method $uri $status';
    server {
        listen 127.0.0.1:%%PORT%%;
        access_log %%DIR%%/access.log t;
        location /hello { return 200 "hello from %%PORT%%\n"; }
        location /echo  { return 200 "$request_method $http_x_test"; }
    }
EOF

my $conf = $t->nginx_conf($plain, no_module => 1);
unlike $conf, qr/load_module/, 'no_module: no load_module line';
like $conf, qr/listen 127\.0\.0\.1:\Q${\ $t->nginx_port }\E;/, '%%PORT%% substituted';
like $t->nginx_conf($plain), qr/^load_module \/\S+ngx_http_bytemark_module\.so;/m, 'load_module by default';
like $t->nginx_conf('', no_module => 1, workers => 2, thread_pool => 'threads=8 max_queue=10'),
     qr/worker_processes 2;.*thread_pool default threads=8 max_queue=10;/s, 'workers and thread_pool';
like $t->nginx_conf('', no_module => 1, thread_pool => 'slow threads=1'),
     qr/thread_pool default threads=4 max_queue=65536;\nthread_pool slow threads=1;/, 'extra thread_pool';
ok !eval { $t->nginx_conf('%%NOPE%%'); 1 }, 'unknown placeholder dies';

my ($rc, $out) = $t->nginx_test($plain, no_module => 1);
is $rc, 0, 'nginx -t ok' or diag $out;
($rc, $out) = $t->nginx_test("no_such_directive on;\n", no_module => 1);
isnt $rc, 0, 'nginx -t fails on a bad directive';
like $out, qr/unknown directive "no_such_directive"/, '... and says why';

$t->start_nginx($plain, no_module => 1, workers => 2);
my $r = $t->get('/hello');
is $r->{status}, 200, 'GET /hello';
is $r->{content}, 'hello from ' . $t->nginx_port . "\n", 'body';
$r = $t->http('POST', '/echo', { 'X-Test' => 'yes' }, 'body');
is $r->{content}, 'POST yes', 'http() with method, headers and body';
is $t->url('/x'), 'http://127.0.0.1:' . $t->nginx_port . '/x', 'url';
my @w = $t->worker_pids;
is scalar @w, 2, 'two workers';
my @nw = $t->reload_nginx;
is scalar @nw, 2, 'reload: two new workers';
ok !(grep { my $n = $_; grep { $_ == $n } @w } @nw), 'reload: they are new';
is $t->get('/hello')->{status}, 200, 'served after reload';
$t->reload_nginx(<<'EOF', no_module => 1);
    server { listen 127.0.0.1:%%PORT%%; location / { return 204; } }
EOF
is $t->get('/hello')->{status}, 204, 'reload with a new configuration';
like $t->access_log, qr{^GET /hello 200$}m, 'access log written';
like $t->error_log, qr/\[notice\].*(reconfiguring|signal 1)/, 'error log readable';

my $module = Bytemark::Test::module_path();
SKIP: {
    skip "module not built ($module)", 1 unless -f $module;
    my ($mrc, $mout) = $t->nginx_test("server { listen 127.0.0.1:%%PORT%%; }");
    is $mrc, 0, 'nginx -t loads the module' or diag $mout;
}

my $npid = $t->nginx_pid;
ok $t->stop_nginx, 'stop_nginx: clean stop';
ok !kill(0, $npid), 'nginx master gone';
ok !(grep { kill 0, $_ } @nw), 'nginx workers gone';
$t->start_nginx($plain, no_module => 1);
is $t->get('/hello')->{status}, 200, 'nginx started again on the same port';

# --- teardown -------------------------------------------------------------

my @pids = grep { defined } ($t->mysql_pid, $t->mongo_pid, $t->nginx_pid, $t->worker_pids,
                             $t->{watchdog_pid});
ok @pids >= 4, 'pids to watch: ' . join(' ', @pids);
$t0 = time;
undef $t;
note sprintf 'teardown took %.2fs', time - $t0;
ok !(grep { kill 0, $_ } @pids), 'nothing left running after undef $t';
ok !-e $dir, 'temp dir removed' unless $ENV{BYTEMARK_TEST_KEEP};

done_testing;
