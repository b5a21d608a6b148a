#!/usr/bin/perl
# The operator's manual (doc/manual.md, issue 8) keeps up with the code:
# every directive of the module's command table has a section with Syntax,
# Default and the Context the table allows; every $bytemark_* variable is
# described; every handler directive is in the HTTP API part; and the
# manual's example configuration passes `nginx -t` with the built module.

use strict;
use warnings;

use Test::More;
use File::Temp qw(tempdir);
use lib 't/lib';
use Bytemark::Test;

my $REPO = $Bytemark::Test::REPO;

sub slurp { my $f = shift; open my $fh, '<', $f or die "$f: $!"; local $/; <$fh> }

my $manual = slurp("$REPO/doc/manual.md");
my $table  = slurp("$REPO/src/http/ngx_http_bytemark_module.c");
my $vars   = join '', map { slurp($_) } glob "$REPO/src/*/*.c";

# { ngx_string("name"), FLAGS, ... } entries of the command table
my %dir;
while ($table =~ /\{\s*ngx_string\("(bytemark_\w+)"\),\s*([A-Z0-9_|\s]+?),/g) {
    my ($name, $flags) = ($1, $2);
    my @ctx;
    push @ctx, 'http'     if $flags =~ /NGX_HTTP_MAIN_CONF/;
    push @ctx, 'server'   if $flags =~ /NGX_HTTP_SRV_CONF/;
    push @ctx, 'location' if $flags =~ /NGX_HTTP_LOC_CONF/;
    $dir{$name} = join ', ', @ctx;
}
ok scalar(keys %dir) >= 10, scalar(keys %dir) . ' directives in the command table';

for my $d (sort keys %dir) {
    my ($section) = $manual =~ /^### \Q$d\E\n(.*?)(?=^#{2,3} )/ms;
    ok defined $section, "$d has a section" or next;
    like $section, qr/^> \*\*Syntax:\*\* `\Q$d\E[ ;]/m, "$d: Syntax";
    like $section, qr/^> \*\*Default:\*\* /m, "$d: Default";
    my ($ctx) = $section =~ /^> \*\*Context:\*\* (.*)$/m;
    is join(', ', ($ctx // '') =~ /`(\w+)`/g), $dir{$d}, "$d: Context is $dir{$d}";
    my ($para) = $section =~ /^(?!>)(\S.*)$/m;
    ok $para, "$d: a paragraph";
}

my %var = map { $_ => 1 } $vars =~ /ngx_string\("(bytemark_\w+)"\),\s*NULL,/g;
ok scalar(keys %var) >= 4, scalar(keys %var) . ' variables';
like $manual, qr/^`\$\Q$_\E`\n: \S/m, "\$$_ is described" for sort keys %var;

# handlers: the directives that set a content handler
for my $h (grep { $table =~ /ngx_string\("\Q$_\E"\),\s*NGX_HTTP_LOC_CONF\|NGX_CONF_NOARGS/ } sort keys %dir) {
    like $manual, qr/^`\Q$h\E` — methods? `/m, "handler $h: methods in the HTTP API part";
}

# the example configuration is valid
SKIP: {
    my $so = $ENV{BYTEMARK_MODULE} || "$REPO/build/ngx_http_bytemark_module.so";
    skip "no module at $so (scripts/build.sh)", 2 unless -f $so;
    my ($conf) = $manual =~ /^## Example Configuration\n.*?^```nginx\n(.*?)^```$/ms;
    ok $conf, 'the manual has an example configuration' or last;
    my $dir = tempdir('bytemark-manual-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    # nginx -t opens logs and creates temp dirs: keep them in $dir
    $conf = "load_module $so;\n$conf";
    $conf =~ s{access_log /var/log/nginx/(\S+)}{access_log $dir/$1}g;
    my $temp = "    client_body_temp_path $dir/cb; proxy_temp_path $dir/px;\n"
             . "    fastcgi_temp_path $dir/fc; uwsgi_temp_path $dir/uw; scgi_temp_path $dir/sc;\n";
    $conf =~ s/^(http \{\n)/$1$temp/m;
    $conf = "error_log $dir/error.log;\npid $dir/nginx.pid;\n$conf";
    open my $fh, '>', "$dir/nginx.conf" or die $!;
    print $fh $conf;
    close $fh;
    my $out = `${\ Bytemark::Test->nginx_bin} -t -p $dir/ -c $dir/nginx.conf 2>&1`;
    is $? >> 8, 0, "the manual's example passes nginx -t" or diag $out;
}

done_testing;
