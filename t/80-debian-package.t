#!/usr/bin/perl
# The Debian package (issue 8): scripts/build-deb.sh builds
# libnginx-mod-http-bytemark_<version>_<arch>.deb with debhelper + dh_nginx
# (or a fresh one is reused); it is installed on this machine with
# `apt-get install ./x.deb`; Debian's nginx loads it through
# /etc/nginx/modules-enabled/ (`nginx -t` on the system configuration, and a
# harness nginx that includes the snippet and serves lookups from
# /usr/lib/nginx/modules); `apt-get remove` takes the snippet away and
# `apt-get purge` the rest. The machine is left as it was found: the package
# is purged (also when the test dies), any package apt pulled in is purged,
# a policy-rc.d we add (so that no maintainer script starts or reloads the
# system's nginx) is removed, and the directories the package created go with
# it. A system-wide lock keeps two runs (prove -j, two checkouts) apart.
#
# Needs root. Skipped when the package is already installed (or removed but
# not purged) on this machine: that is an operator's install, not ours.
# BYTEMARK_TEST_DEB_REBUILD=1 rebuilds the package even when it is fresh.

use strict;
use warnings;

use Test::More;
use Fcntl qw(:flock);
use File::Find ();
use File::Copy qw(copy);
use POSIX ();
use Time::HiRes qw(time);
use lib 't/lib';
use Bytemark::Test;
use Bytemark::Data qw(uuid add_pass cache_entry);

plan skip_all => 'installs a Debian package: needs root' if $> != 0;
for my $tool (qw(apt-get dpkg-query dpkg-buildpackage dh_nginx)) {
    plan skip_all => "$tool is not installed (scripts/deps.sh installs it)"
        unless grep { -x "$_/$tool" } split /:/, $ENV{PATH};
}

my $REPO  = $Bytemark::Test::REPO;
my $PKG   = 'libnginx-mod-http-bytemark';
my $LINK  = '/etc/nginx/modules-enabled/50-mod-http-bytemark.conf';
my $AVAIL = '/usr/share/nginx/modules-available/mod-http-bytemark.conf';
my $SO    = '/usr/lib/nginx/modules/ngx_http_bytemark_module.so';
my $NGINX = '/usr/sbin/nginx';
my $POLICY = '/usr/sbin/policy-rc.d';

sub slurp { my $f = shift; open my $fh, '<', $f or return ''; local $/; <$fh> // '' }

# run(@cmd) -> ($rc, $output) with stdout and stderr together.
sub run {
    my @cmd = @_;
    my $pid = open(my $fh, '-|') // die "fork: $!";
    if (!$pid) {
        open STDERR, '>&', \*STDOUT;
        open STDIN, '<', '/dev/null';
        $ENV{DEBIAN_FRONTEND} = 'noninteractive';
        exec { $cmd[0] } @cmd or do { print "cannot exec $cmd[0]: $!\n"; POSIX::_exit(127) };
    }
    local $/;
    my $out = <$fh> // '';
    close $fh;
    return ($? >> 8, $out);
}

sub pkg_status {
    my ($rc, $out) = run('dpkg-query', '-W', '-f=${db:Status-Abbrev}', $PKG);
    return $rc ? 'un' : ($out =~ s/\s+$//r);
}

sub installed_packages {
    my ($rc, $out) = run('dpkg-query', '-W', '-f=${binary:Package} ${db:Status-Abbrev}\n');
    die "dpkg-query failed: $out" if $rc;
    # "pn"/"un" entries (purged, never installed) are not on the machine
    return { map { /^(\S+) (.)([^n])/ ? ($1 => "$2$3") : () } split /\n/, $out };
}

my @APT = ('apt-get', '-y', '-q', '-o', 'DPkg::Lock::Timeout=300',
           '-o', 'Dpkg::Use-Pty=0');

# --- one run at a time on this machine ----------------------------------------

my $lockdir = -d '/run/lock' ? '/run/lock' : '/tmp';
open my $lock, '>>', "$lockdir/bytemark-debian-package-test.lock" or die "lock file: $!";
my $waited = time;
flock $lock, LOCK_EX or die "flock: $!";
diag sprintf 'waited %.0fs for another run of this test', time - $waited if time - $waited > 1;

# While the package is installed by this test, this file says so (and whether
# the test added policy-rc.d): a run that was killed outright (SIGKILL, power)
# is cleaned up by the next one instead of being taken for an operator's
# install. /var/tmp survives a reboot, like the installed package.
my $MARK = '/var/tmp/bytemark-debian-package-test.installed';
if (-e $MARK) {
    my $m = slurp($MARK);
    diag "a previous run of this test did not clean up ($MARK)";
    if (pkg_status() !~ /^(un|pn)?$/) {
        diag "purging the $PKG it left";
        my ($rc, $out) = run(@APT, 'purge', $PKG);
        die "cannot purge the package a previous run left:\n$out" if $rc;
    }
    unlink $POLICY if $m =~ /^policy-rc\.d added$/m;
    unlink $MARK;
}

my $st = pkg_status();
plan skip_all => "$PKG is already on this machine (dpkg status '$st'); "
               . "this test does not touch an operator's install"
    if $st !~ /^(un|pn)?$/;

# --- what the machine looks like now --------------------------------------------

# Owner, group and mode of the paths below $dir (and $dir), by path.
sub tree_state {
    my $dir = shift;
    my %s;
    return \%s unless -d $dir;
    File::Find::find({ no_chdir => 1, wanted => sub {
        my @st = lstat $_ or return;
        $s{$_} = [@st[2, 4, 5]];
    } }, $dir);
    return \%s;
}

# nginx -t (and any nginx start) creates its temp dirs under /var/lib/nginx
# and hands them to www-data: undo that for the system's nginx -t below.
my @NGINX_STATE = ('/var/lib/nginx', '/var/log/nginx');
my %before = (
    packages => installed_packages(),
    enabled  => join(' ', sort glob '/etc/nginx/modules-enabled/*'),
    (map { $_ => (-e $_ ? 1 : 0) } '/usr/lib/nginx/modules', '/usr/lib/nginx',
        '/usr/share/nginx/modules-available', '/etc/nginx/modules-enabled'),
    (map { ("tree:$_" => tree_state($_)) } @NGINX_STATE),
);

sub restore_nginx_state {
    for my $top (@NGINX_STATE) {
        my $was = $before{"tree:$top"};
        my $now = tree_state($top);
        # new paths, deepest first: remove empty dirs and empty files
        for my $p (sort { length $b <=> length $a } grep { !$was->{$_} } keys %$now) {
            -d $p ? rmdir $p : (-z $p && unlink $p);
        }
        for my $p (grep { $now->{$_} } keys %$was) {
            my ($mode, $uid, $gid) = @{ $was->{$p} };
            next if -l $p;
            chown $uid, $gid, $p;
            chmod $mode & 07777, $p;
        }
    }
}

my ($sys_rc_before, $sys_out_before) = run($NGINX, '-t', '-q');
diag "the system's nginx configuration does not pass nginx -t now; "
   . "not checking it with the package:\n$sys_out_before" if $sys_rc_before;
restore_nginx_state();

# Cleanup, armed just before the install: whatever happens from then on, the
# package goes again. (Nothing else is ever removed: the install is refused
# below if it would bring any other package.)
my ($armed, $added_policy, $cleaned);
sub restore {
    return if !$armed || $cleaned++;
    local ($?, $!, $@);
    if (pkg_status() !~ /^(un|pn)?$/) {
        my ($rc, $out) = run(@APT, 'purge', $PKG);
        print STDERR "# cleanup: apt-get purge $PKG failed:\n$out" if $rc;
    }
    restore_nginx_state();
    unlink $POLICY if $added_policy;
    unlink $MARK if pkg_status() =~ /^(un|pn)?$/;
}
END { restore() }

# --- build (or reuse) the package -------------------------------------------------

my (undef, $ver) = run('dpkg-parsechangelog', '-l', "$REPO/debian/changelog", '-S', 'Version');
my (undef, $arch) = run('dpkg-architecture', '-q', 'DEB_HOST_ARCH');
chomp($ver, $arch);
my $deb = "$REPO/build/deb/${PKG}_${ver}_${arch}.deb";

# Fresh: newer than everything it is built from.
sub newest_input {
    my $newest = 0;
    my @roots = grep { -e } map { "$REPO/$_" }
        qw(config src debian doc example sql/schema.sql README.md CHANGELOG.md LICENSE scripts/build-deb.sh);
    File::Find::find({ no_chdir => 1, wanted => sub {
        my $m = (lstat $_)[9] // 0;
        $newest = $m if -f _ && $m > $newest;
    } }, @roots);
    return $newest;
}

my $local_deb;
{
    my $fresh = -f $deb && (stat $deb)[9] >= newest_input() && !$ENV{BYTEMARK_TEST_DEB_REBUILD};
    if ($fresh) {
        diag "reusing $deb (newer than its sources)";
    } else {
        my $t0 = time;
        my ($rc, $out) = run('env', 'BYTEMARK_SKIP_DEPS=1', 'bash', "$REPO/scripts/build-deb.sh");
        is $rc, 0, 'scripts/build-deb.sh builds the package' or diag $out;
        diag sprintf 'package built in %.1fs', time - $t0;
        die "no package, nothing to test\n" if $rc;
    }
    # Copy it out under build-deb.sh's lock, so that a build running now
    # cannot swap it under us.
    open my $bl, '>>', "$REPO/build/deb/.lock" or die "build/deb/.lock: $!";
    flock $bl, LOCK_SH or die "flock: $!";
    ok -f $deb, "the package is $deb" or die "no package\n";
    close $bl;
}

my $t = Bytemark::Test->new(mysql => 1, mongo => 1);
$local_deb = $t->dir . "/${PKG}_${ver}_${arch}.deb";
copy($deb, $local_deb) or die "copy $deb: $!";

# The package as built: name, ABI and library dependencies, its files.
{
    my ($rc, $f) = run('dpkg-deb', '-f', $local_deb, 'Package', 'Depends');
    like $f, qr/^Package: \Q$PKG\E$/m, "package name $PKG";
    my $abi = slurp('/usr/share/nginx/src/debian/libnginx-mod.abisubstvars') =~ /^nginx:abi=(\S+)/m
        ? $1 : 'nginx-abi-(unknown)';
    like $f, qr/^Depends:.*\b\Q$abi\E\b/m, "depends on the exact nginx ABI ($abi)";
    like $f, qr/^Depends:.*\b$_\b/m, "depends on $_"
        for qw(libmongoc-1.0-0 libbson-1.0-0 libjansson4 libmariadb3);
    ($rc, my $c) = run('dpkg-deb', '-c', $local_deb);
    like $c, qr{ \./usr/lib/nginx/modules/ngx_http_bytemark_module\.so$}m, 'ships the module';
    like $c, qr{ \./usr/share/nginx/modules-available/mod-http-bytemark\.conf$}m, 'ships the snippet';
}

# --- install --------------------------------------------------------------------------

# apt-get must have nothing to install but this package (scripts/deps.sh
# installs the libraries it depends on): what this test installs, it removes,
# and it never removes anything else.
{
    my ($rc, $out) = run(@APT, '-s', 'install', '--no-install-recommends', $local_deb);
    my @inst = $out =~ /^Inst (\S+)/mg;
    is "@inst", $PKG, 'apt-get would install this package and nothing else'
        or do { diag $out; die "not installing: run scripts/deps.sh first\n" };
}

# Debian's maintainer scripts start (nginx) or reload (the nginx-reload trigger
# of a module) the system's nginx through invoke-rc.d; policy-rc.d exit 101
# forbids that, as in any Docker image.
$armed = 1;
if (!-e $POLICY) {
    open my $p, '>', $POLICY or die "$POLICY: $!";
    print $p "#!/bin/sh\n# added by ngx_http_bytemark_module's t/80-debian-package.t\nexit 101\n";
    close $p;
    chmod 0755, $POLICY;
    $added_policy = 1;
}
{
    open my $m, '>', $MARK or die "$MARK: $!";
    print $m "installed by $REPO/t/80-debian-package.t (pid $$)\n";
    print $m "policy-rc.d added\n" if $added_policy;
    close $m;
}

my $t0 = time;
my ($rc, $out) = run(@APT, 'install', '--no-install-recommends', $local_deb);
is $rc, 0, 'apt-get install ./the.deb' or diag $out;
diag sprintf 'installed in %.1fs', time - $t0;
like pkg_status(), qr/^ii/, 'the package is installed';

ok -l $LINK, "$LINK is enabled (a symlink)";
is readlink($LINK), $AVAIL, "... to $AVAIL";
is slurp($LINK), "load_module modules/ngx_http_bytemark_module.so;\n",
    '... which holds the load_module line';
ok -f $SO, "$SO is installed";

SKIP: {
    skip 'the system nginx configuration did not pass nginx -t before', 2 if $sys_rc_before;
    my ($rc, $out) = run($NGINX, '-T');
    is $rc, 0, 'nginx -t on /etc/nginx/nginx.conf passes with the module' or diag $out;
    like $out, qr{^# configuration file \Q$LINK\E:\nload_module modules/ngx_http_bytemark_module\.so;$}m,
        '... and loads it through modules-enabled';
}

# --- Debian's nginx loads the installed module and serves lookups -----------------------

# The snippet's path is relative to nginx's prefix (/usr/share/nginx, where
# modules -> /usr/lib/nginx/modules); the harness runs nginx with its own
# prefix, so it gets the same link.
symlink '/usr/lib/nginx/modules', $t->dir . '/modules' or die "symlink: $!";

my $body = <<'EOF';
bytemark_mongo_uri %%MONGO_URI%%;
bytemark_mongo_collection %%MONGO_COLL%%;
bytemark_mysql %%MYSQL%%;
server {
    listen 127.0.0.1:%%PORT%%;
    location = /t {
        bytemark_user_id $arg_user_id;
        bytemark_tickets;
    }
    location ~ ^/users/(\d+)/passes/([^/]+)$ {
        bytemark_user_id $1;
        bytemark_pass_uuid $2;
        bytemark_pass;
    }
}
EOF
my %nopt = (no_module => 1, main => 'include /etc/nginx/modules-enabled/*bytemark*.conf;');

add_pass($t, user => 801, uuid => uuid(801), status => 'active');
add_pass($t, user => 801, uuid => uuid(802), status => 'expired', version => 4);
add_pass($t, user => 802, uuid => uuid(803), status => 'active');
$t->mongo_insert(cache_entry(802, passes => [{ pass_uuid => uuid(803), status => 'active',
                                               timestamp => 1, free_ticket_status => 0 }]));

$t->start_nginx($body, %nopt);
my @maps = map { slurp("/proc/$_/maps") } $t->worker_pids;
like join('', @maps), qr{ \Q$SO\E$}m, "the worker runs $SO";
unlike join('', @maps), qr{\Q$REPO\E/build/ngx_http_bytemark_module\.so}, '... not the build tree\'s module';

my $r = $t->get('/t?user_id=801');
is $r->{status}, 200, 'tickets of a user from MySQL: 200' or diag $r->{content};
is $r->{headers}{'x-bytemark-source'}, 'mysql', '... X-Bytemark-Source: mysql';
my $j = $r->{status} == 200 ? $t->json($r) : {};
is_deeply [map { $_->{pass_uuid} } @{ $j->{passes} // [] }], [uuid(801)], '... v3 pass';
is_deeply [map { $_->{pass_uuid} } @{ $j->{passes4} // [] }], [uuid(802)], '... v4 pass';

$r = $t->get('/t?user_id=802');
is $r->{status}, 200, 'tickets of a user from the MongoDB cache: 200';
is $r->{headers}{'x-bytemark-source'}, 'mongo', '... X-Bytemark-Source: mongo';

$r = $t->get('/users/801/passes/' . uuid(803));
is $r->{status}, 404, "another user's pass: 404";
$r = $t->get('/t?user_id=0');
is $r->{status}, 400, 'bad user id: 400';
$t->stop_nginx;

# --- remove: the snippet goes, nginx no longer loads the module ---------------------------

$t0 = time;
($rc, $out) = run(@APT, 'remove', $PKG);
is $rc, 0, 'apt-get remove' or diag $out;
diag sprintf 'removed in %.1fs', time - $t0;
ok !-e $LINK && !-l $LINK, "$LINK is gone";
ok !-e $SO, "$SO is gone";
ok !-e $AVAIL, "$AVAIL is gone";

SKIP: {
    skip 'the system nginx configuration did not pass nginx -t before', 2 if $sys_rc_before;
    my ($rc, $out) = run($NGINX, '-T');
    is $rc, 0, 'nginx -t on /etc/nginx/nginx.conf passes without the module' or diag $out;
    unlike $out, qr/bytemark/, '... and mentions no bytemark module';
}
my ($trc, $tout) = $t->nginx_test($body, %nopt);
isnt $trc, 0, 'a configuration using the directives is refused now';
like $tout, qr/unknown directive "bytemark_/, '... unknown directive';

# --- purge: nothing is left ---------------------------------------------------------------

($rc, $out) = run(@APT, 'purge', $PKG);
is $rc, 0, 'apt-get purge' or diag $out;
like pkg_status(), qr/^(un|pn)?$/, 'the package is gone from dpkg';
is join(' ', sort glob '/etc/nginx/modules-enabled/*'), $before{enabled},
    'modules-enabled/ is as it was (no .removed link either)';
for my $d ('/usr/lib/nginx/modules', '/usr/lib/nginx', '/usr/share/nginx/modules-available') {
    is -e $d ? 1 : 0, $before{$d}, "$d " . ($before{$d} ? 'still exists' : 'is gone again');
}

restore();
ok !-e $POLICY, "the policy-rc.d this test added is removed again" if $added_policy;
ok !-e $MARK, "$MARK is removed";
is_deeply installed_packages(), $before{packages}, 'the installed packages are exactly those of before';
is_deeply tree_state($_), $before{"tree:$_"}, "$_ is as it was" for @NGINX_STATE;

done_testing;
