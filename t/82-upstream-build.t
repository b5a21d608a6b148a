#!/usr/bin/perl
# Compatibility (issue 8): the module builds against a plain upstream nginx
# source tree configured with --with-compat --with-threads, not only against
# Debian's configured tree. The tree is the upstream tarball of Debian's nginx
# source package (nginx_<version>.orig.tar.gz, fetched with
# `apt-get source --download-only --tar-only nginx`, checked against the
# SHA-256 in the signed Sources index and cached in build/upstream/). It is
# unpacked fresh, `NGINX_SRC=<tree> scripts/build.sh` builds the module, and
# the result -- an upstream --with-compat build -- is loaded by Debian's
# /usr/sbin/nginx of the same version and serves a lookup.
#
# When the tarball cannot be had (no deb-src in the APT sources, no network)
# the test fails: CI machines reach Debian's archive.

use strict;
use warnings;

use Test::More;
use Digest::SHA;
use Fcntl qw(:flock);
use POSIX ();
use File::Path qw(make_path remove_tree);
use File::Temp qw(tempdir);
use Time::HiRes qw(time);
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass);

my $REPO  = $Bytemark::Test::REPO;
my $CACHE = "$REPO/build/upstream";

sub run {
    my ($dir, @cmd) = @_;
    my $pid = open(my $fh, '-|') // die "fork: $!";
    if (!$pid) {
        open STDERR, '>&', \*STDOUT;
        open STDIN, '<', '/dev/null';
        chdir $dir or die "chdir $dir: $!" if $dir;
        $ENV{DEBIAN_FRONTEND} = 'noninteractive';
        exec { $cmd[0] } @cmd or do { print "cannot exec $cmd[0]: $!\n"; POSIX::_exit(127) };
    }
    local $/;
    my $out = <$fh> // '';
    close $fh;
    return ($? >> 8, $out);
}

sub sha256 { Digest::SHA->new(256)->addfile($_[0])->hexdigest }

# The orig tarball of the nginx source package apt would fetch, and its
# SHA-256 from the (signed) Sources index: (name, sha256) or ().
sub orig_from_index {
    my ($rc, $out) = run(undef, 'apt-cache', 'showsrc', '--only-source', 'nginx');
    return if $rc;
    return $out =~ /^ ([0-9a-f]{64}) \d+ (nginx_[^\s]+\.orig\.tar\.gz)$/m ? ($2, $1) : ();
}

make_path($CACHE);
open my $lock, '>>', "$CACHE/.lock" or die "$CACHE/.lock: $!";
flock $lock, LOCK_EX or die "flock: $!";

my ($orig, $sum) = orig_from_index();
if (!$orig) {
    # deb-src is configured but its index was never fetched: fetch it once.
    my ($rc, $out) = run(undef, 'apt-get', '-q', '-o', 'DPkg::Lock::Timeout=300', 'update');
    diag "apt-get update:\n$out" if $rc;
    ($orig, $sum) = orig_from_index();
}
ok $orig, 'APT knows the nginx source package (deb-src)'
    or diag "enable source packages: add deb-src to the Types: line of "
          . "/etc/apt/sources.list.d/debian.sources, then apt-get update";
die "no nginx source package\n" unless $orig;

my $tarball = "$CACHE/$orig";
if (-f $tarball && sha256($tarball) eq $sum) {
    diag "reusing $tarball";
} else {
    unlink $tarball;
    my $t0 = time;
    my ($rc, $out) = run($CACHE, 'apt-get', '-q', 'source', '--download-only', '--tar-only', 'nginx');
    ok -f $tarball, "apt-get source --download-only --tar-only nginx fetched $orig"
        or diag "($rc) $out";
    diag sprintf 'downloaded in %.1fs', time - $t0;
}
is -f $tarball ? sha256($tarball) : '', $sum, "$orig has the SHA-256 of the Sources index";
die "no nginx tarball\n" unless -f $tarball && sha256($tarball) eq $sum;
close $lock;

# --- build against the plain tree ------------------------------------------------

my $tmp = tempdir('bytemark-upstream-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{BYTEMARK_TEST_KEEP});
my ($rc, $out) = run($tmp, 'tar', 'xzf', $tarball);
is $rc, 0, "unpacked $orig" or diag $out;
my ($tree) = grep { -f "$_/configure" && -d "$_/src/core" } glob "$tmp/nginx-*";
ok $tree, "an upstream tree: $tree" or die "no tree in $orig\n";
my ($version) = ($tree =~ /nginx-([\d.]+)$/);

my $t0 = time;
($rc, $out) = run(undef, 'env', "NGINX_SRC=$tree", "BYTEMARK_BUILD_DIR=$tmp/out",
                  'bash', "$REPO/scripts/build.sh");
is $rc, 0, "NGINX_SRC=<nginx-$version> scripts/build.sh" or diag $out;
diag sprintf 'upstream build in %.1fs', time - $t0;
my $so = "$tmp/out/ngx_http_bytemark_module.so";
ok -s $so, 'the module is produced' or die "no module\n";
open my $fh, '<:raw', $so or die "$so: $!";
read $fh, my $magic, 4;
is $magic, "\x7fELF", '... an ELF shared object';
like do { local $/; open my $h, '<', "$tree/objs/ngx_auto_config.h" or die; <$h> },
    qr/#define NGX_CONFIGURE ".*--with-compat --with-threads/, '... configured --with-compat --with-threads';

# --- Debian's nginx loads the upstream-built module ---------------------------------

my ($nrc, $nv) = run(undef, '/usr/sbin/nginx', '-v');
my ($sys_version) = $nv =~ m{nginx/([\d.]+)};
SKIP: {
    skip "Debian's nginx is $sys_version, the tree $version: no binary compatibility to check", 4
        unless ($sys_version // '') eq $version;

    local $ENV{BYTEMARK_MODULE} = $so;
    my $t = Bytemark::Test->new(mysql => 1);
    add_pass($t, user => 820, uuid => uuid(820), status => 'active');
    $t->start_nginx(<<'EOF');
bytemark_mysql %%MYSQL%%;
server {
    listen 127.0.0.1:%%PORT%%;
    location = /t {
        bytemark_user_id $arg_user_id;
        bytemark_tickets;
    }
}
EOF
    my @maps = map { do { local $/; open my $m, '<', "/proc/$_/maps" or die; <$m> } } $t->worker_pids;
    like join('', @maps), qr/\Q$so\E/, "Debian's nginx $sys_version runs the upstream-built module";
    my $r = $t->get('/t?user_id=820');
    is $r->{status}, 200, '... and serves a lookup' or diag $r->{content};
    is $r->{headers}{'x-bytemark-source'}, 'mysql', '... from MySQL';
    like $r->{content}, qr/\Q${\ uuid(820)}\E/, '... with the pass';
    $t->cleanup;
}

done_testing;
