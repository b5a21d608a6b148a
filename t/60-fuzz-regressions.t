#!/usr/bin/perl
# The fuzz targets' inputs as regression tests (issue 7): every target of
# fuzz/ is built without libFuzzer, as a plain driver under ASan and UBSan
# (scripts/fuzz.sh driver: the module's src/ as it is, clang-14), and runs
# once over its seed corpus (fuzz/corpus/<target>/) and over every input that
# once crashed it or broke one of its checks (fuzz/regressions/<target>/, one
# test each, named after the file). Any sanitizer report, leak or failed
# check fails the test. Fuzzing itself is scripts/fuzz.sh run (README).

use strict;
use warnings;

use Test::More;
use File::Basename qw(basename);
use Time::HiRes qw(time);
use POSIX ();
use lib 't/lib';
use Bytemark::Test;

my $REPO = $Bytemark::Test::REPO;
my @TARGETS = qw(fuzz_bson fuzz_bson_struct fuzz_ingest fuzz_input);

sub run {
    my @cmd = @_;
    my $pid = open(my $fh, '-|') // die "fork: $!";
    if (!$pid) {
        open STDERR, '>&', \*STDOUT;
        open STDIN, '<', '/dev/null';
        $ENV{ASAN_OPTIONS} = 'detect_leaks=1:abort_on_error=1';
        $ENV{UBSAN_OPTIONS} = 'print_stacktrace=1:halt_on_error=1';
        exec { $cmd[0] } @cmd or do { print "cannot exec $cmd[0]: $!\n"; POSIX::_exit(127) };
    }
    local $/;
    my $out = <$fh> // '';
    close $fh;
    return ($? & 127 ? 128 + ($? & 127) : $? >> 8, $out);
}

sub tail {
    my ($s, $n) = @_;
    my @l = split /\n/, $s;
    return join "\n", @l > $n ? @l[-$n .. -1] : @l;
}

my $t0 = time;
my ($rc, $out) = run('bash', "$REPO/scripts/fuzz.sh", 'driver');
is $rc, 0, 'scripts/fuzz.sh driver builds the plain drivers' or diag tail($out, 40);
diag sprintf 'built in %.1fs', time - $t0;
if ($rc) {
    done_testing;
    exit 1;
}

for my $target (@TARGETS) {
    my $bin = "$REPO/build/fuzz/driver/$target";
    my @seeds = glob "$REPO/fuzz/corpus/$target/*";
    ok @seeds >= 5, "$target: a seed corpus (" . scalar(@seeds) . ' inputs)';
    ($rc, $out) = run($bin, "$REPO/fuzz/corpus/$target");
    is $rc, 0, "$target: its seed corpus runs clean" or diag tail($out, 30);

    for my $f (sort glob "$REPO/fuzz/regressions/$target/*") {
        ($rc, $out) = run($bin, $f);
        is $rc, 0, "$target: regression " . basename($f) or diag tail($out, 30);
    }
}
diag sprintf 'all in %.1fs', time - $t0;

done_testing;
