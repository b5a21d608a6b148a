#!/usr/bin/perl
# Install paths of their own (issue 28): scripts/deps.sh installs per
# purpose -- `build` names only the compiler, pkg-config, nginx-dev (and what
# its conf_flags need) and the four libraries; `package` adds the packaging
# tools; `demo` the servers of the demo; `test` (the default, what
# scripts/test.sh and CI run) everything. scripts/build.sh checks its build
# dependencies and, not being root, names the missing ones and stops; its
# warnings are errors only with BYTEMARK_WERROR=1 (or CI=true).
#
# Nothing is installed here: a stand-in dpkg-query on PATH says which
# packages are "missing", --check only lists them, and a stand-in apt-get
# on PATH refuses to run.

use strict;
use warnings;

use Test::More;
use File::Temp qw(tempdir);
use lib 't/lib';
use Bytemark::Test;

my $REPO = $Bytemark::Test::REPO;
my $dir = tempdir('bytemark-deps-XXXXXX', TMPDIR => 1, CLEANUP => 1);
chmod 0755, $dir;

sub spew { my ($f, $s) = @_; open my $fh, '>', $f or die "$f: $!"; print $fh $s; close $fh; chmod 0755, $f }

# dpkg-query that reports the packages in $BYTEMARK_FAKE_MISSING (or all,
# with "*") as not installed, and defers to the real one otherwise
spew("$dir/dpkg-query", <<'SH');
#!/bin/sh
pkg=$(eval echo \${$#})
case " $BYTEMARK_FAKE_MISSING " in
    *" * "*|*" $pkg "*) exit 1 ;;
esac
exec /usr/bin/dpkg-query "$@"
SH

# and an apt-get that refuses: should deps.sh ever try to install while
# only asked to --check, the test fails instead of changing the machine
spew("$dir/apt-get", "#!/bin/sh\necho apt-get called >&2\nexit 97\n");

sub check {
    my ($purpose, %env) = @_;
    local $ENV{PATH} = "$dir:$ENV{PATH}";
    local $ENV{BYTEMARK_FAKE_MISSING} = '*';
    local @ENV{ keys %env } = values %env;
    my $out = `bash $REPO/scripts/deps.sh --check $purpose 2>&1`;
    chomp $out;
    return ($? >> 8, { map { $_ => 1 } split ' ', $out });
}

my $lab = qr/^(mariadb-server|mariadb-client|prometheus|clang-14|libclang-rt-14-dev|llvm-14|valgrind|wrk|nodejs|npm|python3-pymongo|python3-mongomock|dpkg-dev|debhelper|nginx)$/;
my @libs = qw(libmongoc-dev libbson-dev libjansson-dev libmariadb-dev);

my ($rc, $build) = check('build');
is $rc, 1, 'deps.sh --check build: exits 1 when something is missing';
ok $build->{$_}, "build needs $_" for qw(build-essential pkg-config nginx-dev), @libs;
is_deeply [grep { /$lab/ } sort keys %$build], [], 'build needs nothing of the test lab, the demo or packaging';

my (undef, $up) = check('build', NGINX_SRC => '/some/nginx-1.26.3');
ok !$up->{'nginx-dev'}, 'against an upstream tree (NGINX_SRC) build does not need nginx-dev';

my (undef, $pkg) = check('package');
ok $pkg->{$_}, "package needs $_" for qw(dpkg-dev debhelper nginx-dev), @libs;
is_deeply [grep { !/^(dpkg-dev|debhelper|nginx)$/ && /$lab/ } sort keys %$pkg], [],
    'package needs no servers, fuzzers, benchmark tools or Node.js';

my (undef, $demo) = check('demo');
ok $demo->{$_}, "demo needs $_" for qw(mariadb-server python3-pymongo nginx), @libs;
is_deeply [grep { /^(prometheus|clang-14|valgrind|wrk|nodejs|npm|dpkg-dev|debhelper)$/ } sort keys %$demo], [],
    'demo needs no test, fuzz, benchmark or packaging tools';

my (undef, $test) = check('test');
my (undef, $default) = check('');
ok $test->{$_}, "test needs $_" for qw(mariadb-server prometheus clang-14 valgrind wrk dpkg-dev), @libs;
is_deeply $default, $test, 'no argument is test (scripts/test.sh, CI)';
ok !%{ (check('source'))[1] }, 'source installs no package (it enables deb-src)';

like `bash $REPO/scripts/deps.sh nonsense 2>&1`, qr/usage: .*build\|package\|demo\|source\|test/, 'an unknown purpose: usage';

# --- scripts/build.sh names what is missing and stops, when not root ------------

SKIP: {
    skip 'needs root to run build.sh as nobody', 4 if $> != 0;
    my $out = `cd $dir && BYTEMARK_FAKE_MISSING='libjansson-dev nginx-dev' PATH=$dir:\$PATH BYTEMARK_BUILD_DIR=$dir/b setpriv --reuid=nobody --regid=nogroup --clear-groups bash $REPO/scripts/build.sh 2>&1`;
    isnt $? >> 8, 0, 'build.sh, not root, build dependencies missing: fails';
    my ($named) = $out =~ /missing build dependencies \(Debian packages\): (.*)/;
    is_deeply [sort split ' ', $named // ''], [qw(libjansson-dev nginx-dev)],
        'and names exactly the missing ones' or diag $out;
    like $out, qr/install them as root: apt-get install /, 'and how to install them';
    ok !-e "$dir/b/ngx_http_bytemark_module.so", 'without building anything';
}

# --- -Werror only when asked ---------------------------------------------------------

for my $c ([0, '', qr/-Wextra -Wno-error/], [1, 'BYTEMARK_WERROR=1', qr/-Wextra -Werror/]) {
    my ($n, $env, $want) = @$c;
    my $out = `env -u CI -u BYTEMARK_WERROR $env BYTEMARK_BUILD_DIR=$dir/w bash $REPO/scripts/build.sh 2>&1`;
    is $? >> 8, 0, "build.sh " . ($env || 'without BYTEMARK_WERROR') . ': builds' or diag $out;
    my ($cflags) = `grep -m1 '^CFLAGS' $dir/w/nginx-src/objs/Makefile` =~ /(.*)/;
    like $cflags, $want, $n ? 'warnings are errors (CI, test build)' : 'warnings stay warnings (an operator\'s build)';
}

done_testing;
