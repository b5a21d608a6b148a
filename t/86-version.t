#!/usr/bin/perl
# One version everywhere (issue 28): NGX_HTTP_BYTEMARK_VERSION in the core
# header and its number, the top entries of CHANGELOG.md and
# debian/changelog, the version label of bytemark_build_info (Prometheus
# and JSON) and the notice line nginx logs at start.  The library labels
# are the versions the module runs with: those pkg-config and nginx -v
# report on the machine that built it.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use Bytemark::Test;

my $REPO = $Bytemark::Test::REPO;

sub slurp { my ($f) = @_; open my $fh, '<', $f or die "$f: $!"; local $/; <$fh> }

my $h = slurp("$REPO/src/core/ngx_http_bytemark_core.h");
my ($version) = $h =~ /^#define\s+NGX_HTTP_BYTEMARK_VERSION\s+"(\d+\.\d+\.\d+)"/m;
ok $version, "the header defines NGX_HTTP_BYTEMARK_VERSION ($version)" or BAIL_OUT('no version');
my ($num) = $h =~ /^#define\s+ngx_http_bytemark_version\s+(\d+)/m;
my ($ma, $mi, $pa) = split /\./, $version;
is $num, $ma * 1000000 + $mi * 1000 + $pa, 'ngx_http_bytemark_version is its number';

my ($cl) = slurp("$REPO/CHANGELOG.md") =~ /^## (\S+)/m;
is $cl, $version, 'CHANGELOG.md: the top entry is this version';

my ($deb) = slurp("$REPO/debian/changelog") =~ /^\S+ \(([^)]+)\)/;
$deb =~ s/-[^-]*$//;    # a Debian revision, should one be added
is $deb, $version, 'debian/changelog: the top entry is this version';

# --- what the running module says --------------------------------------------

my $t = Bytemark::Test->new();
$t->start_nginx('server { listen 127.0.0.1:%%PORT%%; location = /status { bytemark_status; } }');

my (undef, $nout, $nerr) = $t->_run([$t->nginx_bin, '-v']);
my ($ngx) = "$nout$nerr" =~ m{nginx/(\S+)};
ok $ngx, "nginx -v: $ngx";

my %lib;
for ([mongoc => 'libmongoc-1.0'], [mariadb => 'libmariadb'], [jansson => 'jansson']) {
    my ($rc, $out) = $t->_run(['pkg-config', '--modversion', $_->[1]]);
    chomp $out;
    $lib{ $_->[0] } = $rc == 0 ? $out : undef;
}

my $r = $t->get('/status?format=prometheus');
my @lines = grep { /^bytemark_build_info\b/ } split /\n/, $r->{content};
is scalar(@lines), 1, 'Prometheus: one bytemark_build_info series';
like $r->{content}, qr/^# TYPE bytemark_build_info gauge$/m, 'a gauge';
my ($labels, $value) = ($lines[0] // '') =~ /^bytemark_build_info\{(.*)\} (\S+)$/;
is $value, 1, 'of value 1';
my %l = ($labels // '') =~ /(\w+)="([^"]*)"/g;
is_deeply [sort keys %l], [qw(jansson mariadb mongoc nginx version)], 'labels: version and the four others';
is $l{version}, $version, 'label version: the header\'s';
is $l{nginx}, $ngx, 'label nginx: the nginx that runs it';
for my $k (qw(mongoc mariadb jansson)) {
    SKIP: {
        skip "pkg-config knows no $k", 1 unless defined $lib{$k};
        is $l{$k}, $lib{$k}, "label $k: the installed library's version";
    }
}

my $j = $t->json($t->get('/status'));
is_deeply $j->{bytemark_build_info}, \%l, 'the status JSON: the same, by label name';

$t->stop_nginx;
my @notice = $t->error_log =~ /\[notice\] \d+#\d+: (bytemark module .*)$/mg;
ok @notice >= 1, 'the start logs a notice line' or diag $t->error_log;
is $notice[0], "bytemark module $version (nginx $ngx, mongo-c-driver $l{mongoc}, "
             . "MariaDB Connector/C $l{mariadb}, jansson $l{jansson})",
    'that names the versions';

done_testing;
