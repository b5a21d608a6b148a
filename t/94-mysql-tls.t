#!/usr/bin/perl
# TLS to MySQL (bytemark_mysql_ssl*, issue 26): MariaDB started with a
# certificate for localhost and 127.0.0.1 that the test makes with openssl
# (Bytemark::Certs). Users created REQUIRE SSL and REQUIRE X509 refuse a
# connection without TLS, or without a client certificate, so a 200 through
# them shows the module's own connection was encrypted (and the server's
# count of TLS handshakes goes up). A wrong CA and a wrong name are refused
# in the handshake: 503, one error-log line with the cause, no password
# anywhere. The files are checked at nginx -t.

use strict;
use warnings;

use Test::More;
use HTTP::Tiny;
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(time sleep);
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass);

my $t = Bytemark::Test->new(mysql => 1, mysql_ssl => 1);
my $c = $t->certs;

my %PW = (tls_user => 'Tls-Pw-41', x509_user => 'X509-Pw-42', plain_user => 'Plain-Pw-43');
$t->sql(<<"SQL");
CREATE USER 'tls_user'\@'127.0.0.1' IDENTIFIED BY '$PW{tls_user}' REQUIRE SSL;
CREATE USER 'x509_user'\@'127.0.0.1' IDENTIFIED BY '$PW{x509_user}' REQUIRE X509;
CREATE USER 'plain_user'\@'127.0.0.1' IDENTIFIED BY '$PW{plain_user}';
GRANT SELECT, INSERT, UPDATE ON portal.* TO 'tls_user'\@'127.0.0.1';
GRANT SELECT, INSERT, UPDATE ON portal.* TO 'x509_user'\@'127.0.0.1';
GRANT SELECT, INSERT, UPDATE ON portal.* TO 'plain_user'\@'127.0.0.1';
SQL
add_pass($t, user => 7, uuid => uuid(7));

sub body {
    my ($user, $ssl) = @_;
    return <<"EOF";
        bytemark_mysql host=127.0.0.1 port=%%MYSQL_PORT%% user=$user password=$PW{$user} database=portal;
        $ssl
        server {
            listen 127.0.0.1:%%PORT%%;
            location /t { bytemark_user_id \$arg_u; bytemark_mysql_timeout 3s; bytemark_tickets; }
        }
EOF
}

# TLS handshakes the server accepted, less those of the mariadb client that
# asks (it may use TLS itself, over the socket)
my ($CLIENT_OWN, $ASKED) = (0, 0);

sub handshakes {
    my ($row) = @{ $t->sql("SHOW GLOBAL STATUS LIKE 'Ssl_accepts'") };
    return $row->[1] - $CLIENT_OWN * ++$ASKED;
}

{
    my $a = handshakes();
    $CLIENT_OWN = handshakes() - $a;
    diag "the mariadb client's own TLS handshakes per query: $CLIENT_OWN";
}

my $logpos = 0;

# the error-log lines of the module since the last call
sub new_log {
    my $log = $t->error_log;
    my $new = substr($log, $logpos);
    $logpos = length $log;
    return $new;
}

# one nginx per configuration: these directives are backend-level
sub run_case {
    my ($name, $user, $ssl, $want, $cause) = @_;
    $t->stop_nginx if $t->nginx_pid;
    $t->start_nginx(body($user, $ssl));
    new_log();
    my $before = handshakes();
    my $r = $t->get('/t?u=7');
    is $r->{status}, $want, "$name: $want";
    my $log = new_log();
    if ($want == 200) {
        is $r->{headers}{'x-bytemark-source'}, 'mysql', "$name: answered by mysql";
        like $r->{content}, qr/\Q${\ uuid(7)}\E/, "$name: the pass";
    } else {
        my @lines = grep { /mysql tickets query for user 7 failed/ } split /\n/, $log;
        is scalar @lines, 1, "$name: one error-log line" or diag $log;
        like $lines[0] // '', $cause, "$name: it says why";
    }
    my $seen = handshakes() - $before;
    if ($ssl !~ /bytemark_mysql_ssl on/) {
        is $seen, 0, "$name: the server saw no TLS handshake";
    } elsif ($want == 200) {
        is $seen, 1, "$name: the server saw one TLS handshake";
    } else {
        # a failed connect is tried again once
        ok $seen >= 1, "$name: the server saw TLS handshakes ($seen)";
    }
    return $r;
}

my $ca = "bytemark_mysql_ssl on; bytemark_mysql_ssl_trusted_certificate $c->{ca};";

# the users refuse what is not TLS: the check below can fail
run_case('no TLS, REQUIRE SSL user', 'tls_user', '', 503, qr/Access denied for user 'tls_user'/);

run_case('TLS, right CA, name 127.0.0.1', 'tls_user', $ca, 200);
run_case('TLS, name localhost (DNS name of the certificate)', 'tls_user',
         "$ca bytemark_mysql_ssl_name localhost;", 200);
run_case('TLS, wrong CA', 'tls_user',
         "bytemark_mysql_ssl on; bytemark_mysql_ssl_trusted_certificate $c->{other_ca};",
         503, qr/cannot connect to mysql server #1: TLS to "127\.0\.0\.1": (SSL connection error|TLS\/SSL error): .*(unable to get local issuer certificate|certificate verify failed|self-signed certificate in certificate chain)/);
run_case('TLS, wrong name', 'tls_user', "$ca bytemark_mysql_ssl_name wrong.example;",
         503, qr/TLS to "wrong\.example": (SSL connection error|TLS\/SSL error): Validation of SSL server certificate failed/);
run_case('TLS, verification off: encrypted, not verified', 'tls_user',
         "bytemark_mysql_ssl on; bytemark_mysql_ssl_verify off;", 200);
run_case('TLS, verification off ignores the CA', 'tls_user',
         "bytemark_mysql_ssl on; bytemark_mysql_ssl_verify off; "
         . "bytemark_mysql_ssl_trusted_certificate $c->{other_ca};", 200);

# client certificates: REQUIRE X509
run_case('REQUIRE X509 without a client certificate', 'x509_user', $ca, 503,
         qr/Access denied for user 'x509_user'/);
run_case('REQUIRE X509 with the client certificate', 'x509_user',
         "$ca bytemark_mysql_ssl_certificate $c->{client_cert}; "
         . "bytemark_mysql_ssl_certificate_key $c->{client_key};", 200);

# a Unix socket: the name verified is localhost
{
    $t->sql("CREATE USER 'tls_user'\@'localhost' IDENTIFIED BY '$PW{tls_user}' REQUIRE SSL;"
          . "GRANT SELECT ON portal.* TO 'tls_user'\@'localhost';");
    my $b = body('tls_user', $ca);
    $b =~ s/host=127\.0\.0\.1 port=%%MYSQL_PORT%%/socket=%%MYSQL_SOCKET%%/ or die;
    $t->stop_nginx;
    $t->start_nginx($b);
    my $before = handshakes();
    is $t->get('/t?u=7')->{status}, 200, 'socket=, TLS, name localhost: 200';
    is handshakes() - $before, 1, 'over TLS';
    $t->stop_nginx;
    $t->start_nginx(body('x509_user', "$ca bytemark_mysql_ssl_certificate $c->{client_cert}; "
                                      . "bytemark_mysql_ssl_certificate_key $c->{client_key};"));
    is $t->get('/t?u=7')->{status}, 200, 'client certificate again (the pool below)';
}

# a TLS connection is kept in the pool and reused: a second request makes
# no new handshake
{
    my $before = handshakes();
    is $t->get('/t?u=7')->{status}, 200, 'second request over the pooled TLS connection';
    is handshakes(), $before, 'no new handshake for it';
}

# an ingest's connect over TLS (a thread's, as a lookup's): committed
{
    my $b = body('tls_user', $ca);
    $b =~ s/(location \/t )/location ~ ^\/users\/(\\d+)\/passes\$ { bytemark_user_id \$1; bytemark_ingest; }\n            $1/ or die;
    $t->stop_nginx;
    $t->start_nginx($b);
    my $before = handshakes();
    my $r = $t->http('POST', '/users/7/passes', { 'Content-Type' => 'application/json' },
                     { pass_uuid => uuid(77), status => 'new', version => 4 });
    is_deeply [$r->{status}, $r->{content}], [200, '{"user_id":7,"written":1}'],
              'an ingest over TLS: 200' or diag $r->{content};
    is handshakes() - $before, 1, 'over one TLS handshake';
    my ($row) = @{ $t->sql("SELECT COUNT(*) FROM bytemark_pass WHERE pass_uuid = '" . uuid(77) . "'") };
    is $row->[0], 1, 'the row is committed';
}

# a server without TLS: "on" never falls back to plain text
{
    $t->stop_nginx;
    my $plain = Bytemark::Test->new(mysql => 1);
    $plain->sql("CREATE USER 'plain_user'\@'127.0.0.1' IDENTIFIED BY '$PW{plain_user}';"
              . "GRANT SELECT ON portal.* TO 'plain_user'\@'127.0.0.1';");
    my $port = $plain->mysql_port;
    my $b = body('plain_user', $ca) =~ s/%%MYSQL_PORT%%/$port/r;
    $t->start_nginx($b);
    new_log();
    my $r = $t->get('/t?u=7');
    is $r->{status}, 503, 'server without TLS: 503, no plain-text fallback';
    like new_log(), qr/cannot connect to mysql server #1: TLS to "127\.0\.0\.1": .*SSL is required, but the server does not support it/,
        'and the log says TLS was not possible';
    $t->stop_nginx;
    $b = body('plain_user', 'bytemark_mysql_ssl on; bytemark_mysql_ssl_verify off;') =~ s/%%MYSQL_PORT%%/$port/r;
    $t->start_nginx($b);
    is $t->get('/t?u=7')->{status}, 503, 'verification off: no plain-text fallback either';
    like new_log(), qr/cannot connect to mysql server #1: TLS to "127\.0\.0\.1": the server does not offer TLS/,
        'and the log says so';
    $t->stop_nginx;
    $plain->cleanup;
}

# the name verified is not the address connected to: a certificate that
# names db.test only, for a server given as 127.0.0.1
{
    my $dns = Bytemark::Test->new(mysql => 1, mysql_ssl => 'dns');
    my $dc = $dns->certs;
    $dns->sql("CREATE USER 'tls_user'\@'127.0.0.1' IDENTIFIED BY '$PW{tls_user}' REQUIRE SSL;"
            . "GRANT SELECT ON portal.* TO 'tls_user'\@'127.0.0.1';");
    add_pass($dns, user => 7, uuid => uuid(7));
    my $port = $dns->mysql_port;
    my $dca = "bytemark_mysql_ssl on; bytemark_mysql_ssl_trusted_certificate $dc->{ca};";
    $t->start_nginx(body('tls_user', "$dca bytemark_mysql_ssl_name db.test;") =~ s/%%MYSQL_PORT%%/$port/r);
    new_log();
    is $t->get('/t?u=7')->{status}, 200, 'certificate for db.test, bytemark_mysql_ssl_name db.test: 200';
    $t->stop_nginx;
    $t->start_nginx(body('tls_user', $dca) =~ s/%%MYSQL_PORT%%/$port/r);
    is $t->get('/t?u=7')->{status}, 503, 'the same certificate, default name 127.0.0.1: 503';
    like new_log(), qr/TLS to "127\.0\.0\.1": (SSL connection error|TLS\/SSL error): Validation of SSL server certificate failed/,
        'the name did not match';
    $t->stop_nginx;
    $dns->cleanup;
}

# A pooled TLS connection whose server stops answering (SIGSTOP) does not
# hold the worker: the read waits on the event loop, like any other
{
    $t->stop_nginx if $t->nginx_pid;
    $t->start_nginx(body('tls_user', $ca)
                    . "server { listen 127.0.0.1:%%PORT2%%; location / { return 200 ok; } }\n");
    is $t->get('/t?u=7')->{status}, 200, 'a TLS connection in the pool';
    $t->pause_mysql;
    my $kid = fork // die;
    if (!$kid) { my $r = $t->get('/t?u=7'); POSIX::_exit($r->{status} == 503 ? 0 : 1) }
    sleep 0.5;
    my $s0 = time;
    my $r = HTTP::Tiny->new(timeout => 20)->get('http://127.0.0.1:' . $t->port2 . '/');
    my $static = time - $s0;
    waitpid $kid, 0;
    my $st = $? >> 8;
    $t->resume_mysql;
    is $st, 0, 'server stopped: the lookup ends with 503 (its budget)';
    is $r->{status}, 200, 'meanwhile another request on the worker is answered';
    ok $static < 1, sprintf('at once (%.3f s): the TLS read waits on the event loop', $static);
    $t->stop_nginx;
}

# A server that stalls in the handshake: it sends MariaDB's greeting (the
# real server's, replayed: it offers TLS) and then nothing. Connector/C 3.3
# does the handshake on a blocking socket, so the connect of a TLS server
# runs on the thread pool (doc/manual.md, bytemark_mysql_ssl): while it
# stalls, other requests of the same worker (one worker) are answered at
# once, and the stalled one ends with 503 within its budget. The thread
# keeps the connection until the handshake's socket timeouts (the budget
# left) end it; then the slot serves the next request.
sub stall_server {
    my $real = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->mysql_port)
        or die "connect: $!";
    my $greeting = '';
    sysread($real, $greeting, 65536) or die "no greeting";
    close $real;
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 16,
                                  ReuseAddr => 1) or die "listen: $!";
    my $port = $l->sockport;
    my $pid = fork // die;
    if (!$pid) {
        my @keep;
        while (my $a = $l->accept) { syswrite($a, $greeting); push @keep, $a }
        POSIX::_exit(0);
    }
    close $l;
    return ($port, $pid);
}

{
    my ($port, $pid) = stall_server();
    $t->start_nginx(body('tls_user', $ca) =~ s/%%MYSQL_PORT%%/$port/r
                    . "server { listen 127.0.0.1:%%PORT2%%; location / { return 200 ok; } }\n");
    new_log();
    my $t0 = time;
    my $kid = fork // die;
    if (!$kid) { my $r = $t->get('/t?u=7'); POSIX::_exit($r->{status} == 503 ? 0 : 1) }
    sleep 0.3;
    # several requests while the handshake stalls: each is answered at once
    my ($static, $ok, $pending) = (0, 0, 1);
    for (1 .. 5) {
        my $s0 = time;
        my $r = HTTP::Tiny->new(timeout => 20)->get('http://127.0.0.1:' . $t->port2 . '/');
        my $d = time - $s0;
        $static = $d if $d > $static;
        $ok++ if $r->{status} == 200;
        sleep 0.1;
    }
    $pending = 0 if waitpid($kid, POSIX::WNOHANG()) != 0;
    my $early = $?;
    is $ok, 5, 'while the handshake stalls, other requests on the worker are answered';
    ok $static < 0.5, sprintf('at once (the slowest in %.3f s): the handshake runs on a thread', $static);
    ok $pending, 'and the stalled lookup was still pending meanwhile';
    if ($pending) { waitpid $kid, 0 } else { $? = $early }
    my $took = time - $t0;
    is $? >> 8, 0, 'a server that stalls in the handshake: 503';
    ok $took < 4.5, sprintf('within its budget, 3 s (%.2f s)', $took);
    # the budget (3s, the connect timeout too) runs out as the handshake fails
    like new_log(), qr/mysql tickets query for user 7 failed after \d+ ms: (no answer within 3000 ms|cannot connect to mysql server #1: TLS to "127\.0\.0\.1": )/,
        'logged';
    # the thread returns (the socket timeouts: the budget left), and the
    # connection slot is free again: the next lookup fails in its budget too
    # rather than waiting for a slot held forever
    sleep 1;
    my $s0 = time;
    my $r = $t->get('/t?u=7');
    my $again = time - $s0;
    is $r->{status}, 503, 'the next lookup to the stalled server: 503 too';
    ok $again < 4.5, sprintf('within its budget (%.2f s)', $again);
    $t->stop_nginx;
    kill 'KILL', $pid;
    waitpid $pid, 0;
}

# While a handshake stalls on a thread: a client that goes away, and a
# reload. The connection is the thread's until the handshake's timeouts end
# it; the old worker then exits (its thread pool waits for the task), and
# nothing crashes.
{
    my ($port, $pid) = stall_server();
    $t->start_nginx(body('tls_user', $ca) =~ s/%%MYSQL_PORT%%/$port/r
                    . "server { listen 127.0.0.1:%%PORT2%%; location / { return 200 ok; } }\n");
    new_log();
    my ($old) = $t->worker_pids;
    my $gone = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->nginx_port)
        or die "connect: $!";
    print $gone "GET /t?u=7 HTTP/1.0\r\nHost: x\r\n\r\n";
    my $kid = fork // die;
    if (!$kid) { my $r = $t->get('/t?u=9'); POSIX::_exit($r->{status} == 503 ? 0 : 1) }
    sleep 0.3;
    close $gone;
    my $t0 = time;
    my @new = $t->reload_nginx;
    my $s0 = time;
    my $r = HTTP::Tiny->new(timeout => 20)->get('http://127.0.0.1:' . $t->port2 . '/');
    my $static = time - $s0;
    is $r->{status}, 200, 'reload while a handshake stalls: the new worker answers';
    ok $static < 0.5, sprintf('at once (%.3f s)', $static);
    waitpid $kid, 0;
    is $? >> 8, 0, 'the lookup in flight in the old worker ends with 503';
    my $left;
    while (time - $t0 < 10) { $left = kill 0, $old; last unless $left; sleep 0.1 }
    ok !$left, sprintf('the old worker exits once the handshakes time out (%.2f s)', time - $t0);
    unlike new_log(), qr/\[alert\]|\[emerg\]|exited on signal|segfault/, 'no alert, no crash';
    is $t->get('/static-none')->{status}, 404, 'nginx still serves';
    $t->stop_nginx;
    kill 'KILL', $pid;
    waitpid $pid, 0;
}

# The thread pool's queue is full (one thread, a queue of one): a third TLS
# connect is not queued, its lookup answers 503 at once, and the two posted
# are counted in bytemark_thread_pool_queue until their threads return.
{
    my ($port, $pid) = stall_server();
    my $b = body('tls_user', "$ca bytemark_thread_pool tiny; bytemark_mysql_batch 1;")
            =~ s/%%MYSQL_PORT%%/$port/r;
    $b =~ s/(location \/t )/location = \/status { bytemark_status; }\n            $1/ or die;
    $t->start_nginx($b, thread_pool => 'tiny threads=1 max_queue=1');
    new_log();
    my @kids;
    for (1 .. 2) {
        my $kid = fork // die;
        if (!$kid) { my $r = $t->get('/t?u=7'); POSIX::_exit($r->{status} == 503 ? 0 : 1) }
        push @kids, $kid;
        sleep 0.3;
    }
    my $s0 = time;
    my $r = $t->get('/t?u=7');
    my $d = time - $s0;
    is $r->{status}, 503, 'thread pool queue full: the third lookup gets 503';
    ok $d < 1, sprintf('at once (%.3f s)', $d);
    my $q = eval { $t->json($t->get('/status'))->{bytemark_thread_pool_queue} } // -1;
    is $q, 2, 'bytemark_thread_pool_queue counts the two TLS connects posted';
    like new_log(), qr/mysql tickets query for user 7 failed after \d+ ms: cannot connect to mysql server #1: TLS: the thread pool queue is full/,
        'the log says why';
    my $bad = 0;
    for (@kids) { waitpid $_, 0; $bad++ if $? }
    is $bad, 0, 'the two posted lookups end with 503 too';
    my $t1 = time;
    my $back;
    while (time - $t1 < 10) {
        $back = eval { $t->json($t->get('/status'))->{bytemark_thread_pool_queue} } // -1;
        last if $back == 0;
        sleep 0.2;
    }
    is $back, 0, 'the threads return: the gauge is 0 again';
    $t->stop_nginx;
    kill 'KILL', $pid;
    waitpid $pid, 0;
}

# nginx -t
{
    my $try = sub {
        my ($ssl, $re, $name) = @_;
        my ($rc, $out) = $t->nginx_test(body('tls_user', $ssl));
        isnt $rc, 0, "nginx -t fails: $name";
        like $out, $re, "nginx -t says: $name";
    };
    $try->('bytemark_mysql_ssl on;',
           qr/"bytemark_mysql_ssl_verify" is on .* needs "bytemark_mysql_ssl_trusted_certificate"/,
           'verification without a CA');
    $try->("bytemark_mysql_ssl on; bytemark_mysql_ssl_trusted_certificate $c->{dir}/missing.pem;",
           qr/"bytemark_mysql_ssl_trusted_certificate" cannot read "\Q$c->{dir}\E\/missing\.pem" \(2: No such file/,
           'a CA file that is missing');
    $try->("$ca bytemark_mysql_ssl_certificate $c->{client_cert};",
           qr/"bytemark_mysql_ssl_certificate" and "bytemark_mysql_ssl_certificate_key" go together/,
           'a certificate without its key');
    $try->("$ca bytemark_mysql_ssl_certificate_key $c->{dir}/nokey.pem;",
           qr/"bytemark_mysql_ssl_certificate_key" cannot read/, 'a key file that is missing');
    my ($rc, $out) = $t->nginx_test(body('tls_user', "$ca bytemark_mysql_ssl_verify on;"));
    is $rc, 0, 'nginx -t accepts a complete TLS configuration' or diag $out;
}

# no password in any log
{
    my $all = $t->error_log . $t->access_log;
    for my $u (sort keys %PW) {
        unlike $all, qr/\Q$PW{$u}\E/, "the password of $u is in no log";
    }
}

done_testing;
