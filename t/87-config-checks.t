#!/usr/bin/perl
# config (issue 28): nginx's configure stops, with a line that names the
# library and the Debian package, when a library is missing, too old or
# lacks the API the module drives -- checked the way nginx checks its own
# libraries (auto/feature), by compiling against the headers found.  Each
# case runs ./configure on a copy of nginx's source tree (nginx-dev's) with
# a pkg-config search path in which one library is missing or replaced by
# a stand-in: a header of an old version, or a mysql.h without the
# non-blocking API (as Oracle's libmysqlclient).

use strict;
use warnings;

use Test::More;
use File::Temp qw(tempdir);
use lib 't/lib';
use Bytemark::Test;

my $REPO = $Bytemark::Test::REPO;
my $SRC  = $ENV{BYTEMARK_NGINX_SRC} // '/usr/share/nginx/src';

plan skip_all => "no nginx source tree in $SRC (nginx-dev)" unless -x "$SRC/configure";
plan skip_all => 'pkg-config is not installed' if system('pkg-config --version >/dev/null 2>&1');

my $dir = tempdir('bytemark-config-XXXXXX', TMPDIR => 1, CLEANUP => 1);
system('cp', '-a', $SRC, "$dir/nginx") == 0 or die "cp $SRC: $?";

# every .pc file pkg-config knows, by name
my %pc;
for my $d (split /:/, `pkg-config --variable pc_path pkg-config`) {
    chomp $d;
    for my $f (glob "$d/*.pc") {
        my ($n) = $f =~ m{([^/]+)\.pc$};
        $pc{$n} //= $f;
    }
}
ok $pc{$_}, "$_.pc is installed" for qw(libmongoc-1.0 libbson-1.0 jansson libcrypto libmariadb);

sub spew { my ($f, $s) = @_; open my $fh, '>', $f or die "$f: $!"; print $fh $s; close $fh }

# a pkg-config directory: the real files, minus $hide, plus %fake (name =>
# include directory holding the stand-in header)
sub pcdir {
    my ($name, %o) = @_;
    my $d = "$dir/pc-$name";
    mkdir $d;
    for my $n (keys %pc) {
        next if $o{hide} && $n eq $o{hide};
        next if $o{fake} && $o{fake}{$n};
        symlink $pc{$n}, "$d/$n.pc" or die "symlink: $!";
    }
    for my $n (keys %{ $o{fake} // {} }) {
        my $real = `pkg-config --modversion $n`;
        chomp $real;
        spew("$d/$n.pc", "Name: $n\nDescription: stand-in\nVersion: $real\n"
                       . "Cflags: -I$o{fake}{$n}\nLibs: " . `pkg-config --libs $n`);
    }
    return $d;
}

# ./configure's exit code and output
sub configure {
    my ($pcdir) = @_;
    local $ENV{PKG_CONFIG_LIBDIR} = $pcdir;
    local $ENV{PKG_CONFIG_PATH} = '';
    my $out = `cd $dir/nginx && ./configure --with-compat --with-threads --without-http_rewrite_module --without-http_gzip_module --add-dynamic-module=$REPO 2>&1`;
    return ($? >> 8, $out);
}

my ($rc, $out) = configure(pcdir('all'));
is $rc, 0, 'everything installed: configure succeeds' or diag $out;
like $out, qr/checking for MariaDB Connector\/C non-blocking API \.\.\. found/, 'the non-blocking API is checked';

($rc, $out) = configure(pcdir('nomariadb', hide => 'libmariadb'));
ok $rc != 0 && $out =~ /error: ngx_http_bytemark_module: MariaDB Connector\/C \[libmariadb-dev\] is not installed/,
    'no Connector/C: says so, with the package' or diag $out;

($rc, $out) = configure(pcdir('nomongoc', hide => 'libmongoc-1.0'));
ok $rc != 0 && $out =~ /mongo-c-driver 1\.x \[libmongoc-dev\] is not installed/,
    'no mongo-c-driver: says so' or diag $out;

# a mysql.h with the blocking API only, as Oracle's libmysqlclient
mkdir "$dir/oracle";
spew("$dir/oracle/mysql.h", "typedef struct st_mysql MYSQL;\ntypedef struct st_mysql_stmt MYSQL_STMT;\n"
                          . "MYSQL *mysql_init(MYSQL *);\n");
($rc, $out) = configure(pcdir('oracle', fake => { libmariadb => "$dir/oracle" }));
ok $rc != 0 && $out =~ /checking for MariaDB Connector\/C non-blocking API \.\.\. not found/
   && $out =~ /non-blocking API.*is\s+needed; Oracle's libmysqlclient lacks it/s,
    'a client library without the non-blocking API is refused by name' or diag $out;

# headers of versions older than the module needs
mkdir "$dir/oldjansson";
spew("$dir/oldjansson/jansson.h", "#define JANSSON_VERSION_HEX 0x020400\n");
($rc, $out) = configure(pcdir('oldjansson', fake => { jansson => "$dir/oldjansson" }));
ok $rc != 0 && $out =~ /error: ngx_http_bytemark_module: jansson 2\.7 or later is needed/,
    'jansson 2.4: refused, the version named' or diag $out;

mkdir "$dir/oldmongoc";
mkdir "$dir/oldmongoc/mongoc";
spew("$dir/oldmongoc/mongoc/mongoc.h", "#define MONGOC_MAJOR_VERSION 1\n#define MONGOC_MINOR_VERSION 9\n"
    . "#define MONGOC_MICRO_VERSION 0\n#define MONGOC_CHECK_VERSION(a,b,c) (MONGOC_MINOR_VERSION >= (b))\n");
($rc, $out) = configure(pcdir('oldmongoc', fake => { 'libmongoc-1.0' => "$dir/oldmongoc" }));
ok $rc != 0 && $out =~ /error: ngx_http_bytemark_module: mongo-c-driver 1\.16 or a later 1\.x release is needed/,
    'mongo-c-driver 1.9: refused, the version named' or diag $out;

done_testing;
