#!/usr/bin/perl
# The Prometheus alert rules shipped in doc/bytemark-alerts.yml are valid
# (promtool check rules), behave as their unit tests say (promtool test
# rules doc/bytemark-alerts.test.yml: each alert fires on its symptom and
# stays quiet without it), use only metrics the status page exports, and
# are documented in the manual and installed by the Debian package.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use Bytemark::Test;

my $REPO  = $Bytemark::Test::REPO;
my $rules = "$REPO/doc/bytemark-alerts.yml";
my $tests = "$REPO/doc/bytemark-alerts.test.yml";

sub slurp { my $f = shift; open my $fh, '<', $f or die "$f: $!"; local $/; <$fh> }

my $text = slurp($rules);

# every metric an expression names is one the module exports
my $src = join '', map { slurp($_) } glob "$REPO/src/shm/*.c";
my $exprs = join "\n", $text =~ /^\s*expr:(.*?)^\s*for:/msg;
my %metric = map { $_ => 1 } $exprs =~ /\b(bytemark_[a-z_]+)\b/g;
ok scalar(keys %metric) >= 4, scalar(keys %metric) . ' metrics in the rules';
for my $m (sort keys %metric) {
    (my $base = $m) =~ s/_(bucket|sum|count)$//;
    like $src, qr/"\Q$base\E[" {]/, "$m is a metric of the status page";
}

# the alerts the manual promises, each documented there
my $manual = slurp("$REPO/doc/manual.md");
my @alerts = $text =~ /^\s*- alert: (\w+)/mg;
ok @alerts >= 5, scalar(@alerts) . ' alerts';
like $manual, qr/`\Q$_\E`/, "$_ is in the manual" for @alerts;
for my $topic ([breaker => qr/bytemark_breaker_open/],
               [fallback => qr/bytemark_answers_total\{source=~"mysql\|stale"\}/],
               [stale => qr/bytemark_answers_total\{source="stale"\}/],
               ['cache write failures' => qr/bytemark_cache_write_failures_total/],
               ['thread pool queue' => qr/bytemark_thread_pool_queue/]) {
    like $text, $topic->[1], "an alert on $topic->[0]";
}

like slurp("$REPO/debian/docs"), qr{^doc/bytemark-alerts\.yml$}m,
    'the Debian package installs the rules';

SKIP: {
    my $promtool = -x '/usr/bin/promtool' ? '/usr/bin/promtool' : `command -v promtool`;
    chomp $promtool;
    skip 'no promtool (Debian package prometheus, installed by scripts/deps.sh)', 2
        unless $promtool && -x $promtool;
    my $out = `$promtool check rules $rules 2>&1`;
    is $? >> 8, 0, 'promtool check rules' or diag $out;
    $out = `cd $REPO/doc && $promtool test rules $tests 2>&1`;
    is $? >> 8, 0, 'promtool test rules: every alert fires on its symptom, and only then'
        or diag $out;
}

done_testing;
