#!/usr/bin/perl
# nginx built without --with-threads (issue 15): the module runs every
# backend call on a thread pool, so such an nginx is refused -- `nginx -t`
# and a start both fail with a message that says why, whatever the http{}
# block configures, and nothing crashes. Two ways to get there:
#   - the module built against the tree without threads (NGX_THREADS unset);
#   - the module built against a tree with threads, loaded by the nginx
#     without them: --with-compat gives both the same binary signature, so
#     nginx loads it; its weak references to the thread pool functions are
#     NULL, and the module refuses by name (not dlopen's "undefined symbol").
#
# Needs such a build, which scripts/matrix.sh provides:
#   BYTEMARK_NGINX_NOTHREADS   nginx configured --with-compat, without threads
#   BYTEMARK_MODULE_NOTHREADS  the module built against that tree
#   BYTEMARK_MODULE_THREADED   (optional) the module built against a tree of
#                              the same version with threads
#   BYTEMARK_NGINX             (optional, with the previous one) that tree's
#                              nginx: the control, which accepts the module
# Skipped otherwise.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use Bytemark::Test;

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

my $t = Bytemark::Test->new;
my $dir = $t->dir;
my $port = $t->nginx_port;
mkdir "$dir/logs";

my $REFUSED = qr/ngx_http_bytemark_module needs nginx built with --with-threads \(.*\), and this nginx was built without threads in \S+:\d+/;

sub conf {
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
}

my %http = (
    'tickets and pass' => <<"EOF",
    bytemark_mongo_uri mongodb://127.0.0.1:1/;
    bytemark_mysql host=127.0.0.1 port=1 user=u database=portal;
    server {
        listen 127.0.0.1:$port;
        location = /t { bytemark_user_id \$arg_user_id; bytemark_tickets; }
        location ~ ^/u/(\\d+)/p/(.*)\$ { bytemark_user_id \$1; bytemark_pass_uuid \$2; bytemark_pass; }
    }
EOF
    'status only' => <<"EOF",
    server { listen 127.0.0.1:$port; location = /status { bytemark_status; } }
EOF
    'no bytemark directive' => <<"EOF",
    server { listen 127.0.0.1:$port; location = /static { return 200 "ok\\n"; } }
EOF
);

my $n = 0;
sub nginx_run {
    my ($bin, $conf, @args) = @_;
    my $file = "$dir/nginx-" . ++$n . '.conf';
    Bytemark::Test::_spew($file, $conf);
    my $out = `$bin @args -p $dir/ -c $file 2>&1`;
    return ($? >> 8, $?, $out);
}

my @modules = ([ 'built without threads' => $module ]);
push @modules, [ 'built with threads' => $ENV{BYTEMARK_MODULE_THREADED} ]
    if $ENV{BYTEMARK_MODULE_THREADED};

for my $m (@modules) {
    my ($how, $so) = @$m;
    for my $what (sort keys %http) {
        my $conf = conf($so, $http{$what});
        my ($rc, $st, $out) = nginx_run($nginx, $conf, '-t');
        isnt $rc, 0, "module $how, $what: nginx -t fails";
        is $st & 127, 0, '... by exiting, not by a signal';
        like $out, $REFUSED, '... saying the module needs --with-threads' or diag $out;
        unlike $out, qr/undefined symbol|dlopen/, '... not a dlopen() error';

        ($rc, $st, $out) = nginx_run($nginx, $conf);
        isnt $rc, 0, "module $how, $what: nginx does not start";
        is $st & 127, 0, '... and does not crash';
        like $out, $REFUSED, '... with the same message' or diag $out;
        ok !-e "$dir/nginx.pid", '... no master is left running';
        ok !Bytemark::Test::_connectable($port), '... nothing listens';
    }
}

# A configuration as the test harness writes it (thread_pool in the main
# context): nginx itself refuses, the thread_pool module being absent.
my $harness_conf = $t->nginx_conf("server { listen 127.0.0.1:$port; }");
$harness_conf =~ s/^load_module .*$/load_module $module;/m;
my ($rc, $st, $out) = nginx_run($nginx, $harness_conf, '-t');
isnt $rc, 0, 'with a thread_pool line: nginx -t fails';
like $out, qr/unknown directive "thread_pool"/, '... on nginx\'s own "unknown directive"';

my $err = Bytemark::Test::_slurp("$dir/error.log");
unlike $err, qr/exited on signal|segfault|\[alert\]/, 'no crash in the error log';

# The control: the nginx with threads accepts the module built with threads.
SKIP: {
    skip 'no BYTEMARK_MODULE_THREADED and BYTEMARK_NGINX to compare with', 2
        unless $ENV{BYTEMARK_MODULE_THREADED} && $ENV{BYTEMARK_NGINX};
    my ($rc, $st, $out) = nginx_run($ENV{BYTEMARK_NGINX},
                                    conf($ENV{BYTEMARK_MODULE_THREADED}, $http{'status only'}), '-t');
    is $rc, 0, "the nginx with threads ($ENV{BYTEMARK_NGINX}) accepts the module built with threads"
        or diag $out;
    unlike $out, $REFUSED, '... without the message';
}

done_testing;
