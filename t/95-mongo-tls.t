#!/usr/bin/perl
# TLS to MongoDB (issue 26): the driver's URI options (tls=true,
# tlsCAFile=, tlsCertificateKeyFile=), against FerretDB's TLS listener
# (tools/ferretdb --listen-tls*, certificates made by Bytemark::Certs). The
# stand-in has no TLS: on it this test is skipped. With the right CA the
# lookup is answered by MongoDB; with a wrong CA, or without the client
# certificate a listener requires, the MongoDB call fails (one error-log
# line, no credentials in it) and MySQL answers.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass cache_entry body_both);

my $t = Bytemark::Test->new(mysql => 1, mongo => 1, mongo_tls => 1);
my $c = $t->certs;
my $tport = $t->mongo_tls_port;
my $dir = $t->dir;
my $MONGO_PW = 'Tls-Mongo-Pw-3';

add_pass($t, user => 8, uuid => uuid(8));
$t->mongo_insert(cache_entry(8, passes => [ { pass_uuid => uuid(88), status => 'cached' } ]));

my $logpos = 0;

sub new_log {
    my $log = $t->error_log;
    my $new = substr($log, $logpos);
    $logpos = length $log;
    return $new;
}

sub body {
    my ($mongo) = @_;
    return body_both(no_mongo => 1,
                     loc => 'bytemark_mongo_timeout 3s; bytemark_mysql_timeout 3s;',
                     http => "$mongo\nbytemark_mongo_collection %%MONGO_COLL%%;\n");
}

sub run_case {
    my ($name, $mongo, $source, $cause) = @_;
    $t->stop_nginx if $t->nginx_pid;
    $t->start_nginx(body($mongo));
    new_log();
    my $r = $t->get('/t?user_id=8');
    is $r->{status}, 200, "$name: 200";
    is $r->{headers}{'x-bytemark-source'}, $source, "$name: answered by $source";
    my $log = new_log();
    if ($source eq 'mongo') {
        like $r->{content}, qr/\Q${\ uuid(88)}\E/, "$name: the cached pass";
        unlike $log, qr/bytemark: mongo/, "$name: nothing logged";
    } else {
        like $r->{content}, qr/\Q${\ uuid(8)}\E/, "$name: the pass from MySQL";
        my @lines = grep { /bytemark: mongo .*failed/ } split /\n/, $log;
        is scalar @lines, 1, "$name: one error-log line for the MongoDB failure" or diag $log;
        like $lines[0] // '', $cause, "$name: it says why";
    }
}

my $tls = "mongodb://127.0.0.1:$tport/?tls=true&tlsCAFile=$c->{ca}";

run_case('TLS, right CA', qq{bytemark_mongo_uri "$tls";}, 'mongo');

run_case('plain text to the TLS listener', qq{bytemark_mongo_uri "mongodb://127.0.0.1:$tport/?serverSelectionTimeoutMS=1000";},
         'mysql', qr/No suitable servers found.*(Failed to read|socket error)/);

run_case('TLS, wrong CA', qq{bytemark_mongo_uri "mongodb://127.0.0.1:$tport/?tls=true&tlsCAFile=$c->{other_ca}&serverSelectionTimeoutMS=1000";},
         'mysql', qr/TLS handshake failed: certificate verify failed/);

# the URI, TLS options and credentials, from a file: FerretDB refuses the
# credentials (SCRAM-SHA-1), after the TLS handshake
{
    open my $fh, '>', "$dir/tls.uri" or die;
    print {$fh} "mongodb://bmuser:$MONGO_PW\@127.0.0.1:$tport/?tls=true&tlsCAFile=$c->{ca}&authSource=admin\n";
    close $fh;
    chmod 0600, "$dir/tls.uri";
    run_case('TLS with credentials from a file', "bytemark_mongo_uri_file $dir/tls.uri;", 'mysql',
             qr/Unsupported authentication mechanism/);
}

$t->stop_nginx;

# a listener that requires client certificates
{
    my $m = Bytemark::Test->new(mongo => 1, mongo_tls => 'client');
    my $mc = $m->certs;
    my $p = $m->mongo_tls_port;
    $m->mongo_insert(cache_entry(8, passes => [ { pass_uuid => uuid(88), status => 'cached' } ]));
    my $uri = "mongodb://127.0.0.1:$p/?tls=true&tlsCAFile=$mc->{ca}";
    run_case('client certificate required, given',
             qq{bytemark_mongo_uri "$uri&tlsCertificateKeyFile=$mc->{client_pem}";}, 'mongo');
    run_case('client certificate required, not given',
             qq{bytemark_mongo_uri "$uri&serverSelectionTimeoutMS=1000";}, 'mysql',
             qr/No suitable servers found/);
    $t->stop_nginx;
    $m->cleanup;
}

unlike $t->error_log . $t->access_log, qr/\Q$MONGO_PW\E/, 'the MongoDB password is in no log';

done_testing;
