#!/usr/bin/perl
# The layout of src/ (README "Architecture"): layers call only downward.
#
# src/LAYERS lists the layers bottom first, one folder each, and what each
# may include.  From the #include "..." lines of src/ (and, when a
# configured nginx tree is at hand, from the compiler's -MM output, which
# must agree with them) this test builds the include graph and fails on:
#   - an include of a layer that src/LAYERS does not allow (upward, or
#     sideways between siblings such as mongo and mysql),
#   - a .c file that includes another layer's header (it includes its own
#     layer's header, which includes those below),
#   - a private header (*_private.h) included from outside its folder,
#   - a cycle, among files or in the table itself,
#   - a folder that is not a layer, a layer without its one header,
#   - a source file over 900 lines,
#   - after a build: a call (an ngx_http_bytemark_* symbol an object file
#     uses, nm -u) to a function or variable defined in a layer that src/LAYERS
#     does not allow, unless t/lib/layer-exceptions.txt lists it.
# On failure it prints the graph.  BYTEMARK_LAYERS_SRC=dir checks another
# tree (to see the check fail on a copy with a bad include).
#
# Core Perl only (and nm, from binutils, for the objects): no nginx, no
# backends.

use strict;
use warnings;
use Test::More;
use File::Basename qw(basename dirname);
use Cwd qw(abs_path);

my $REPO = abs_path(dirname(__FILE__) . '/..');
my $SRC = $ENV{BYTEMARK_LAYERS_SRC} || "$REPO/src";
my $MAX_LINES = 900;

sub slurp { my $f = shift; open my $fh, '<', $f or die "$f: $!"; local $/; <$fh> }

# --- the table ------------------------------------------------------------

my (@order, %allow);
for (split /\n/, slurp("$SRC/LAYERS")) {
    next if /^\s*(#|$)/;
    my ($layer, @below) = split;
    push @order, $layer;
    $allow{$layer} = { map { $_ => 1 } @below };
}
ok @order >= 2, 'src/LAYERS lists the layers: ' . join(' ', @order);

my %rank;
@rank{@order} = 0 .. $#order;
my @table_bad;
for my $l (@order) {
    for my $b (sort keys %{ $allow{$l} }) {
        push @table_bad, "$l may include $b, which is not a layer"
            unless exists $rank{$b};
        push @table_bad, "$l may include $b, which is not below it"
            if exists $rank{$b} && $rank{$b} >= $rank{$l};
    }
}
# listed bottom first and each may include only earlier lines: acyclic
ok !@table_bad, 'the table only goes downward' or diag join "\n", @table_bad;

# --- the files ------------------------------------------------------------

my (%layer_of, %path_of, @files, @bad);
opendir my $dh, $SRC or die "$SRC: $!";
for my $d (sort grep { !/^\./ && -d "$SRC/$_" } readdir $dh) {
    unless (exists $rank{$d}) {
        push @bad, "src/$d/ is not a layer of src/LAYERS";
        next;
    }
    for my $f (sort glob "$SRC/$d/*.[ch]") {
        my $name = basename($f);
        if ($path_of{$name}) {
            # every layer folder is on the include path: names are global
            push @bad, "$name is in both src/$layer_of{$name}/ and src/$d/";
        }
        $layer_of{$name} = $d;
        $path_of{$name} = $f;
        push @files, $name;
        if ($name =~ /\.h$/ && $name ne "ngx_http_bytemark_$d.h"
            && $name !~ /_private\.h$/)
        {
            push @bad, "src/$d/$name: a layer has one header, "
                     . "ngx_http_bytemark_$d.h; others end in _private.h";
        }
    }
}
closedir $dh;
for my $f (glob "$SRC/*.[ch]") {
    push @bad, 'src/' . basename($f) . ' is in no layer';
}
for my $l (@order) {
    push @bad, "layer $l has no src/$l/ngx_http_bytemark_$l.h"
        unless ($layer_of{"ngx_http_bytemark_$l.h"} // '') eq $l;
}
ok !@bad, 'every file is in a layer, every layer has its header'
    or diag join "\n", @bad;

# --- the include graph, from the sources ----------------------------------

my %inc;       # file -> [ project headers it includes ]
my @unknown;
for my $name (@files) {
    my @incs;
    for (split /\n/, slurp($path_of{$name})) {
        next unless /^\s*#\s*include\s*"([^"]+)"/;
        my $h = basename($1);
        if (!$path_of{$h}) {
            push @unknown, "$name includes \"$1\", not a file of src/";
            next;
        }
        push @incs, $h;
    }
    $inc{$name} = \@incs;
}
ok !@unknown, 'every quoted include is a file of src/' or diag join "\n", @unknown;

my @wrong;
for my $name (@files) {
    my $l = $layer_of{$name};
    for my $h (@{ $inc{$name} }) {
        my $hl = $layer_of{$h};
        if ($hl eq $l) {
            next;
        }
        if ($name =~ /\.c$/) {
            push @wrong, "src/$l/$name includes $h of layer $hl: a .c file "
                       . "includes its own layer's header";
        }
        if ($h =~ /_private\.h$/) {
            push @wrong, "src/$l/$name includes $h, private to src/$hl/";
        } elsif (!$allow{$l}{$hl}) {
            my $dir = $rank{$hl} > $rank{$l} ? 'upward'
                    : 'to a layer src/LAYERS does not allow';
            push @wrong, "src/$l/$name includes $h: $l -> $hl goes $dir";
        }
    }
}
ok !@wrong, 'no include goes upward, sideways, or into a private header'
    or diag join "\n", @wrong;

# cycles: depth-first, white/grey/black
my (%state, @cycles);
sub visit {
    my ($n, @path) = @_;
    $state{$n} = 1;
    for my $h (@{ $inc{$n} || [] }) {
        if (($state{$h} // 0) == 1) {
            my @p = (@path, $n);
            my ($i) = grep { $p[$_] eq $h } 0 .. $#p;
            push @cycles, join(' -> ', @p[$i .. $#p], $h);
        } elsif (!$state{$h}) {
            visit($h, @path, $n);
        }
    }
    $state{$n} = 2;
}
visit($_) for grep { !$state{$_} } @files;
ok !@cycles, 'no include cycle' or diag join "\n", @cycles;

# --- sizes ----------------------------------------------------------------

my @long;
for my $name (@files) {
    my $n = () = slurp($path_of{$name}) =~ /\n/g;
    push @long, "src/$layer_of{$name}/$name: $n lines (at most $MAX_LINES)"
        if $n > $MAX_LINES;
}
ok !@long, "no source file over $MAX_LINES lines" or diag join "\n", @long;

# --- the compiler's view: cc -MM must see the same graph ------------------

sub closure {
    my ($n, $seen) = @_;
    for my $h (@{ $inc{$n} || [] }) {
        next if $seen->{$h}++;
        closure($h, $seen);
    }
    return $seen;
}

my $tree = "$REPO/build/nginx-src";
my $cc = $ENV{CC} || 'cc';
SKIP: {
    skip 'no configured nginx tree in build/ (scripts/build.sh): '
       . 'cc -MM not run', 1
        unless -f "$tree/objs/ngx_auto_config.h"
            && system("$cc --version >/dev/null 2>&1") == 0;

    my @pc = split ' ', `pkg-config --cflags libmongoc-1.0 libbson-1.0 jansson libcrypto 2>/dev/null`;
    my $my = `pkg-config --exists libmariadb 2>/dev/null && echo libmariadb || echo mysqlclient`;
    chomp $my;
    push @pc, split ' ', `pkg-config --cflags $my 2>/dev/null`;
    my @I = map { "-I$tree/$_" } qw(src/core src/event src/event/modules
                                     src/os/unix objs src/http
                                     src/http/modules src/http/v2);
    push @I, map { "-I$SRC/$_" } @order;

    my @differ;
    for my $name (grep { /\.c$/ } @files) {
        my $out = `$cc -MM @I @pc $path_of{$name} 2>&1`;
        if ($?) {
            push @differ, "cc -MM $name failed: $out";
            next;
        }
        $out =~ s/\\\n/ /g;
        my %mm;
        for my $dep (split ' ', (split /:/, $out, 2)[1]) {
            my $b = basename($dep);
            # the project's own headers only
            $mm{$b} = 1 if $path_of{$b} && $b ne $name
                           && abs_path($dep) eq abs_path($path_of{$b});
        }
        my $parsed = closure($name, {});
        my @a = sort keys %mm;
        my @b = sort keys %$parsed;
        push @differ, "$name: cc -MM sees @a, the #include lines say @b"
            unless "@a" eq "@b";
    }
    ok !@differ, 'cc -MM agrees with the #include lines'
        or diag join "\n", @differ;
}

# --- the linker's view: calls go down too ---------------------------------
#
# Includes are not the whole story: a file can declare a function itself,
# or a lower layer's header can declare what an upper layer defines. So,
# after a build, every ngx_http_bytemark_* symbol that a layer's objects use
# (nm -u) must be defined (nm --defined-only) in that layer or in one it may
# include. The calls that do not yet are listed in t/lib/layer-exceptions.txt
# ("symbol from-layer to-layer", each with a comment); an entry that no longer
# matches fails as well, so the list only shrinks. BYTEMARK_LAYERS_OBJS=dir
# checks the objects of another build (dir/<layer>/*.o).

my $objs = $ENV{BYTEMARK_LAYERS_OBJS} || "$REPO/build/nginx-src/objs/addon";
my $EXCEPTIONS = "$REPO/t/lib/layer-exceptions.txt";

# ngx_http_bytemark_module, the ngx_module_t (defined in http/, declared in
# core.h), is the module's identity: every layer finds its request context
# and configuration through it, as every nginx module does
my %IDENTITY = (ngx_http_bytemark_module => 1);

SKIP: {
    my @have = grep { my @o = glob "$objs/$_/*.o"; @o } @order;
    skip "no build objects in $objs (scripts/build.sh): calls not checked", 3
        unless @have && system('nm --version >/dev/null 2>&1') == 0;

    # the objects of the sources there are now (a deleted file's .o stays)
    my (%objs_of, @stale);
    for my $l (@order) {
        for my $c (grep { /\.c$/ && $layer_of{$_} eq $l } @files) {
            (my $o = "$objs/$l/$c") =~ s/\.c$/.o/;
            if (!-f $o) {
                push @stale, "$o is missing";
                next;
            }
            push @stale, "$o is older than src/$l/$c"
                if -M $o > -M $path_of{$c};
            push @{ $objs_of{$l} }, $o;
        }
    }
    diag "the objects may not match the sources (rebuild): @stale" if @stale;

    my (%defined_in, %uses);     # symbol -> layer; layer -> [file, symbol]
    for my $l (@order) {
        for my $o (@{ $objs_of{$l} || [] }) {
            for (split /\n/, `nm --defined-only $o`) {
                my ($type, $sym) = (split)[1, 2];
                next unless defined $sym && $sym =~ /^ngx_http_bytemark_/;
                # local (static) symbols are no layer's interface
                next if $type =~ /^[a-z]$/;
                $defined_in{$sym} = $l;
            }
            for (split /\n/, `nm -u $o`) {
                my $sym = (split)[-1];
                next unless defined $sym && $sym =~ /^ngx_http_bytemark_/;
                (my $c = basename($o)) =~ s/\.o$/.c/;
                push @{ $uses{$l} }, [ $c, $sym ];
            }
        }
    }

    my (%allowed, @bad_lines);
    if (open my $fh, '<', $EXCEPTIONS) {
        while (<$fh>) {
            s/#.*//;
            next unless /\S/;
            my ($sym, $from, $to, @rest) = split;
            if (!defined $to || @rest || !exists $rank{$from} || !exists $rank{$to}) {
                push @bad_lines, "t/lib/layer-exceptions.txt:$.: want \"symbol from-layer to-layer\"";
                next;
            }
            $allowed{"$sym $from $to"} = 0;
        }
    }
    ok !@bad_lines, 'every line of t/lib/layer-exceptions.txt is "symbol from to"'
        or diag join "\n", @bad_lines;

    my @up;
    for my $l (@order) {
        for my $u (@{ $uses{$l} || [] }) {
            my ($file, $sym) = @$u;
            my $to = $defined_in{$sym};
            next if !defined $to || $to eq $l || $allow{$l}{$to} || $IDENTITY{$sym};
            my $key = "$sym $l $to";
            if (exists $allowed{$key}) {
                $allowed{$key}++;
                next;
            }
            my $dir = $rank{$to} > $rank{$l} ? 'up' : 'sideways';
            push @up, "src/$l/$file calls $sym, defined in $to/: $l -> $to goes $dir";
        }
    }
    ok !@up, 'no call goes up or sideways (objects of ' . join(' ', @have) . ')'
        or diag join "\n", @up,
            '(an edge that must stay for now goes into t/lib/layer-exceptions.txt, with a comment)';

    my @gone = map { "t/lib/layer-exceptions.txt: \"$_\" is no longer called: remove it" }
               grep { !$allowed{$_} } sort keys %allowed;
    ok !@gone, 'every exception in t/lib/layer-exceptions.txt is still used'
        or diag join "\n", @gone;
}

# --- on failure, the graph ------------------------------------------------

unless (Test::More->builder->is_passing) {
    diag "the include graph (layer: file -> project headers it includes):";
    for my $l (@order) {
        for my $name (grep { $layer_of{$_} eq $l } @files) {
            diag sprintf "  %-9s %s -> %s", "$l:", $name,
                join(' ', @{ $inc{$name} }) || '(none)';
        }
    }
    diag "allowed (src/LAYERS): "
       . join('; ', map { "$_ -> " . (join(' ', sort keys %{ $allow{$_} }) || '-') } @order);
}

done_testing;
