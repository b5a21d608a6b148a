#!/usr/bin/perl
# nginx built without --with-threads (issues 15, 25). MongoDB calls run on a
# thread pool (mongo-c-driver has no non-blocking API), and so do the connects
# of MySQL over TLS (Connector/C's handshake blocks); other MySQL calls run on
# the event loop and need none. So:
#   - a configuration with bytemark_mongo_uri (or bytemark_thread_pool, or
#     bytemark_mysql_ssl on) is refused -- `nginx -t` and a start both fail
#     with a message that names the directive and says why, and nothing
#     crashes;
#   - a MySQL-only configuration, or one with only bytemark_status, starts and
#     serves tickets, passes and ingest;
#   - on an nginx with threads, a MySQL-only configuration looks up no thread
#     pool: nginx starts no "default" pool's 32 threads for it (a pool named
#     by bytemark_thread_pool is still checked: an operator who writes one
#     expects a typo to be caught).
# Two ways to get an nginx without threads:
#   - the module built against the tree without threads (NGX_THREADS unset);
#   - the module built against a tree with threads, loaded by the nginx
#     without them: --with-compat gives both the same binary signature, so
#     nginx loads it; its weak references to the thread pool functions are
#     NULL, and the module refuses by name (not dlopen's "undefined symbol").
#
# The part without threads needs such a build, which scripts/matrix.sh
# provides (or: ./configure --with-compat --add-dynamic-module=<repo> in an
# nginx tree, make, make install):
#   BYTEMARK_NGINX_NOTHREADS   nginx configured --with-compat, without threads
#   BYTEMARK_MODULE_NOTHREADS  the module built against that tree
#   BYTEMARK_MODULE_THREADED   (optional) the module built against a tree of
#                              the same version with threads
#   BYTEMARK_NGINX             (optional, with the previous one) that tree's
#                              nginx: the control, which accepts the module
# and is skipped otherwise. The part with threads runs with the harness's
# nginx and module (BYTEMARK_NGINX and BYTEMARK_MODULE_THREADED when both are
# set, as matrix.sh sets them, else BYTEMARK_NGINX and BYTEMARK_MODULE).

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass);

my $JSON = JSON::PP->new->utf8->canonical;

sub src { $_[0]{headers}{'x-bytemark-source'} // '' }

# tickets, pass, ingest and a static location; MySQL only
my $MYSQL_ONLY = <<"EOF";
    bytemark_mysql %%MYSQL%%;
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /t { bytemark_user_id \$arg_user_id; bytemark_tickets; }
        location ~ ^/users/([^/]*)/passes/([^/]*)\$ {
            bytemark_user_id \$1; bytemark_pass_uuid \$2; bytemark_pass;
        }
        location ~ ^/users/([^/]*)/passes\$ { bytemark_user_id \$1; bytemark_ingest; }
        location = /static { return 200 "static ok\\n"; }
    }
EOF

# A MySQL-only module at work: a lookup, an ingest, the lookup again.
sub serves_mysql_only {
    my ($t, $what) = @_;
    add_pass($t, user => 7, uuid => uuid(70), status => 'active');
    my $r = $t->get('/t?user_id=7');
    is_deeply [$r->{status}, src($r), $r->{status} == 200 ? $t->json($r)->{passes}[0]{pass_uuid} : ''],
              [200, 'mysql', uuid(70)], "$what: tickets from MySQL" or diag $r->{content};
    $r = $t->http('POST', '/users/7/passes', { 'Content-Type' => 'application/json' },
                  { pass_uuid => uuid(71), status => 'new', version => 4 });
    is_deeply [$r->{status}, $r->{content}], [200, '{"user_id":7,"written":1}'],
              "$what: ingest writes the pass";
    $r = $t->get('/t?user_id=7');
    is_deeply [$r->{status}, $r->{status} == 200 ? $t->json($r)->{passes4}[0]{status} : ''],
              [200, 'new'], "$what: ... and the next lookup has it";
    $r = $t->get('/users/7/passes/' . uuid(71));
    is_deeply [$r->{status}, src($r)], [200, 'mysql'], "$what: one pass from MySQL";
    is $t->get('/static')->{status}, 200, "$what: the worker serves static files";
}

# threads of a process (/proc/<pid>/task)
sub threads_of {
    my $pid = shift;
    opendir my $dh, "/proc/$pid/task" or return -1;
    my $n = grep { /^\d+$/ } readdir $dh;
    return $n;
}

# --- with threads: a MySQL-only configuration asks for no thread pool -------

subtest 'nginx with threads, MySQL only' => sub {
    local $ENV{BYTEMARK_MODULE} = $ENV{BYTEMARK_MODULE_THREADED}
        if $ENV{BYTEMARK_MODULE_THREADED} && $ENV{BYTEMARK_NGINX};
    my $t = Bytemark::Test->new(mysql => 1);

    # no thread_pool line: nginx creates the "default" pool (32 threads a
    # worker) only when a module looks it up
    $t->start_nginx($MYSQL_ONLY, thread_pool => 'none');
    my ($w) = $t->worker_pids;
    my $n = threads_of($w);
    ok $n >= 1 && $n <= 2, "the worker runs no thread pool ($n threads)";
    serves_mysql_only($t, 'with threads');
    $t->stop_nginx;

    # TLS: the connects run on a thread pool, nginx's "default" one
    $t->start_nginx("bytemark_mysql_ssl on; bytemark_mysql_ssl_verify off;\n$MYSQL_ONLY",
                    thread_pool => 'none');
    ($w) = $t->worker_pids;
    $n = threads_of($w);
    ok $n > 2, "with bytemark_mysql_ssl on, the worker runs the default pool ($n threads)";
    $t->stop_nginx;

    # a pool that is named is checked all the same: a typo is caught
    my ($rc, $out) = $t->nginx_test("bytemark_thread_pool nonexistent;\n$MYSQL_ONLY",
                                    thread_pool => 'none');
    isnt $rc, 0, 'bytemark_thread_pool naming an undefined pool: nginx -t fails';
    like $out, qr/unknown thread pool "nonexistent"/, '... with nginx\'s message' or diag $out;
};

# --- without threads ---------------------------------------------------------

subtest 'nginx without threads' => sub {

my $nginx = $ENV{BYTEMARK_NGINX_NOTHREADS}
    or plan skip_all => 'no nginx built without threads: set BYTEMARK_NGINX_NOTHREADS and '
                      . 'BYTEMARK_MODULE_NOTHREADS (scripts/matrix.sh does)';
my $module = $ENV{BYTEMARK_MODULE_NOTHREADS}
    or plan skip_all => 'BYTEMARK_MODULE_NOTHREADS is not set (the module built against '
                      . "the tree of $nginx)";
-x $nginx or BAIL_OUT("BYTEMARK_NGINX_NOTHREADS=$nginx is not executable");
-f $module or BAIL_OUT("BYTEMARK_MODULE_NOTHREADS=$module does not exist");

my $V = `$nginx -V 2>&1`;
unlike $V, qr/--with-threads/, "$nginx is built without --with-threads";
like $V, qr/--with-compat/, '... and with --with-compat';

my $t = Bytemark::Test->new(mysql => 1);
my $dir = $t->dir;
my $port = $t->nginx_port;
mkdir "$dir/logs";

sub refused {
    my $directive = shift;
    return qr/"\Q$directive\E" needs nginx built with --with-threads \(.*MongoDB.*\), and this nginx was built without threads in \S+:\d+/;
}

my $conf_of = sub {
    my ($so, $http) = @_;
    my $user = $> == 0 ? "user root;\n" : '';
    return <<"EOF";
load_module $so;
${user}daemon on;
pid $dir/nginx.pid;
error_log $dir/error.log info;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $dir/client_body_temp;
    proxy_temp_path $dir/proxy_temp;
    fastcgi_temp_path $dir/fastcgi_temp;
    uwsgi_temp_path $dir/uwsgi_temp;
    scgi_temp_path $dir/scgi_temp;
$http
}
EOF
};

my $mysql = 'host=127.0.0.1 port=1 user=u database=portal';
my $servers = <<"EOF";
    server {
        listen 127.0.0.1:$port;
        location = /t { bytemark_user_id \$arg_user_id; bytemark_tickets; }
        location ~ ^/u/(\\d+)/p/(.*)\$ { bytemark_user_id \$1; bytemark_pass_uuid \$2; bytemark_pass; }
    }
EOF

# configurations with a MongoDB backend, and the directive refused
my %refused = (
    'MongoDB and MySQL' => [ 'bytemark_mongo_uri',
                             "bytemark_mongo_uri mongodb://127.0.0.1:1/;\nbytemark_mysql $mysql;\n$servers" ],
    'MongoDB only' => [ 'bytemark_mongo_uri', "bytemark_mongo_uri mongodb://127.0.0.1:1/;\n$servers" ],
    'MySQL and a thread pool' => [ 'bytemark_thread_pool',
                                   "bytemark_mysql $mysql;\nbytemark_thread_pool default;\n$servers" ],
    # its connects run on a thread: the TLS handshake of Connector/C blocks
    'MySQL over TLS' => [ 'bytemark_mysql_ssl',
                          "bytemark_mysql $mysql;\nbytemark_mysql_ssl on;\n"
                          . "bytemark_mysql_ssl_verify off;\n$servers" ],
);
# configurations that need no thread
my %accepted = (
    'MySQL only' => "bytemark_mysql $mysql;\n$servers",
    'MySQL, TLS off' => "bytemark_mysql $mysql;\nbytemark_mysql_ssl off;\n$servers",
    'status only' => "server { listen 127.0.0.1:$port; location = /status { bytemark_status; } }",
    'no bytemark directive' => "server { listen 127.0.0.1:$port; location = /static { return 200 \"ok\\n\"; } }",
);

my $n = 0;
my $nginx_run = sub {
    my ($bin, $conf, @args) = @_;
    my $file = "$dir/nginx-" . ++$n . '.conf';
    Bytemark::Test::_spew($file, $conf);
    my $out = `$bin @args -p $dir/ -c $file 2>&1`;
    return ($? >> 8, $?, $out);
};

my @modules = ([ 'built without threads' => $module ]);
push @modules, [ 'built with threads' => $ENV{BYTEMARK_MODULE_THREADED} ]
    if $ENV{BYTEMARK_MODULE_THREADED};

for my $m (@modules) {
    my ($how, $so) = @$m;
    for my $what (sort keys %refused) {
        my ($directive, $http) = @{ $refused{$what} };
        my $conf = $conf_of->($so, $http);
        my ($rc, $st, $out) = $nginx_run->($nginx, $conf, '-t');
        isnt $rc, 0, "module $how, $what: nginx -t fails";
        is $st & 127, 0, '... by exiting, not by a signal';
        like $out, refused($directive), "... saying \"$directive\" needs --with-threads" or diag $out;
        unlike $out, qr/undefined symbol|dlopen/, '... not a dlopen() error';

        ($rc, $st, $out) = $nginx_run->($nginx, $conf);
        isnt $rc, 0, "module $how, $what: nginx does not start";
        is $st & 127, 0, '... and does not crash';
        like $out, refused($directive), '... with the same message' or diag $out;
        ok !-e "$dir/nginx.pid", '... no master is left running';
        ok !Bytemark::Test::_connectable($port), '... nothing listens';
    }
    for my $what (sort keys %accepted) {
        my ($rc, $st, $out) = $nginx_run->($nginx, $conf_of->($so, $accepted{$what}), '-t');
        is $rc, 0, "module $how, $what: nginx -t accepts it" or diag $out;
        unlike $out, qr/needs nginx built with --with-threads/, '... without a word about threads';
    }

    # and it serves: tickets, a pass and ingest against a real MariaDB
    local $ENV{BYTEMARK_NGINX} = $nginx;
    local $ENV{BYTEMARK_MODULE} = $so;
    $t->start_nginx($MYSQL_ONLY, thread_pool => 'none');
    serves_mysql_only($t, "module $how, MySQL only");
    $t->stop_nginx;
    $t->sql('DELETE FROM bytemark_pass');
}

# A configuration as the test harness writes it (thread_pool in the main
# context): nginx itself refuses, the thread_pool module being absent.
my $harness_conf = $t->nginx_conf("server { listen 127.0.0.1:$port; }");
$harness_conf =~ s/^load_module .*$/load_module $module;/m;
my ($rc, $st, $out) = $nginx_run->($nginx, $harness_conf, '-t');
isnt $rc, 0, 'with a thread_pool line: nginx -t fails';
like $out, qr/unknown directive "thread_pool"/, '... on nginx\'s own "unknown directive"';

my $err = $t->error_log . Bytemark::Test::_slurp("$dir/error.log");
unlike $err, qr/exited on signal|segfault|\[alert\]/, 'no crash in the error log';

# The control: the nginx with threads accepts the module built with threads,
# MongoDB included.
SKIP: {
    skip 'no BYTEMARK_MODULE_THREADED and BYTEMARK_NGINX to compare with', 2
        unless $ENV{BYTEMARK_MODULE_THREADED} && $ENV{BYTEMARK_NGINX};
    my ($rc, $st, $out) = $nginx_run->($ENV{BYTEMARK_NGINX},
        $conf_of->($ENV{BYTEMARK_MODULE_THREADED}, $refused{'MongoDB and MySQL'}[1]), '-t');
    is $rc, 0, "the nginx with threads ($ENV{BYTEMARK_NGINX}) accepts the module built with threads"
        or diag $out;
    unlike $out, qr/needs nginx built with --with-threads/, '... without the message';
}

};

done_testing;
