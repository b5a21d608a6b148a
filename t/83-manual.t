#!/usr/bin/perl
# The operator's manual (doc/manual.md) keeps up with the code: every
# directive of the module's command tables (every ngx_command_t array in
# src/) has a section with Syntax, the Default the configuration code
# gives it (ngx_conf_merge_*_value, ngx_conf_init_*_value, ngx_str_set of
# an unset string) and the Context its NGX_HTTP_*_CONF flags allow; every
# $bytemark_* variable is described; every handler directive is in the
# HTTP API part; the metrics table lists exactly the metrics, with their
# types, that the status page's Prometheus text declares (# TYPE lines of
# a running nginx); and the manual's example configuration and the
# README's synopsis pass `nginx -t` with the built module.

use strict;
use warnings;

use Test::More;
use File::Temp qw(tempdir);
use lib 't/lib';
use Bytemark::Test;

my $REPO = $Bytemark::Test::REPO;

sub slurp { my $f = shift; open my $fh, '<', $f or die "$f: $!"; local $/; <$fh> }

my $manual = slurp("$REPO/doc/manual.md");
my $vars   = join '', map { slurp($_) } glob "$REPO/src/*/*.c";

# the ngx_command_t arrays of every source file, as one text
my $table = '';
$table .= $1 while $vars =~ /ngx_command_t\s+\w+\[\]\s*=\s*\{(.*?)ngx_null_command/gs;

# { ngx_string("name"), FLAGS, set, CONF_OFFSET, offset, post } entries
my (%dir, %cmd);
while ($table =~ /\{\s*ngx_string\("(bytemark_\w+)"\),\s*([A-Z0-9_|\s]+?),\s*(\w+),\s*\w+,\s*(offsetof\([^)]*\)|\w+)\s*,/g) {
    my ($name, $flags, $set, $off) = ($1, $2, $3, $4);
    my @ctx;
    push @ctx, 'http'     if $flags =~ /NGX_HTTP_MAIN_CONF/;
    push @ctx, 'server'   if $flags =~ /NGX_HTTP_SRV_CONF/;
    push @ctx, 'location' if $flags =~ /NGX_HTTP_LOC_CONF/;
    $dir{$name} = join ', ', @ctx;
    my ($field) = $off =~ /offsetof\(\s*\w+\s*,\s*(\w+)\s*\)/;
    $cmd{$name} = { flag => ($flags =~ /NGX_CONF_FLAG/ ? 1 : 0), set => $set,
                    field => $field };
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

# Defaults: what the configuration code gives a field left unset
my %default;    # field => [kind, raw value]
while ($vars =~ /ngx_conf_(merge|init)_(?:(\w+?)_)?value\(\s*\w+->(\w+)\s*,\s*([^;]*?)\)\s*;/g) {
    my ($op, $kind, $field, $rest) = ($1, $2 // 'num', $3, $4);
    $rest =~ s/^\s*\w+->\w+\s*,\s*// if $op eq 'merge';
    $default{$field} = [$kind, $rest];
}
while ($vars =~ /if \(\w+->(\w+)\.len == 0\) \{(.*?)\n\s*\}/gs) {
    my $body = $2;
    $default{$1} = ['str', $2] while $body =~ /ngx_str_set\(&\w+->(\w+),\s*"([^"]*)"\)/g;
}
ok scalar(keys %default) >= 10, scalar(keys %default) . ' defaults in the configuration code';

# the sources' #define NAME value, for defaults given by name
my %define;
my $headers = join '', map { slurp($_) } glob "$REPO/src/*/*.[ch]";
$define{$1} = $2 while $headers =~ /^#define\s+(\w+)\s+(.+?)\s*$/mg;

# a default as nginx.conf writes it; '?' when the code computes it
sub render {
    my ($kind, $raw, $flag) = @_;
    $raw =~ s/^\s+|\s+$//g;
    $raw =~ s/^\(\s*\w+\s*\)\s*//;
    $raw = $define{$raw} if $raw =~ /^[A-Z]\w*$/ && defined $define{$raw};
    $raw = eval $raw if $raw =~ /^[\d\s*+()]+$/ && $raw =~ /\d/;   # 1024 * 1024
    return undef if $raw =~ /^(NULL|NGX_CONF_UNSET\w*)$/;
    if ($kind eq 'str') {       # ngx_conf_merge_str_value(..., "text")
        $raw =~ s/^"(.*)"$/$1/;
        return $raw;
    }
    return '?' unless $raw =~ /^\d+$/;
    return $raw ? 'on' : 'off' if $flag;
    if ($kind eq 'msec' || $kind eq 'sec') {
        my $ms = $kind eq 'sec' ? $raw * 1000 : $raw;
        return '0' if $ms == 0;
        for my $u ([86400000, 'd'], [3600000, 'h'], [60000, 'm'], [1000, 's']) {
            return $ms / $u->[0] . $u->[1] if $ms % $u->[0] == 0;
        }
        return "${ms}ms";
    }
    if ($kind eq 'size') {
        return $raw / 1048576 . 'm' if $raw && $raw % 1048576 == 0;
        return $raw / 1024 . 'k' if $raw && $raw % 1024 == 0;
    }
    return $raw;
}

# the fields a directive sets: its offsetof(), else what its handler assigns
# or names in its table of name=value parameters
sub fields_of {
    my $c = shift;
    return ($c->{field}) if $c->{field};
    my ($body) = $vars =~ /\n\Q$c->{set}\E\([^)]*\)\s*\n\{(.*?)\n\}/s;
    return () unless defined $body;
    my %f = map { $_ => 1 } $body =~ /\b\w+->(\w+)(?:\.\w+)?\s*=(?!=)/g,
                            # a name=value table (ngx_http_bytemark_param_t)
                            $body =~ /offsetof\(\s*\w+\s*,\s*(\w+)\s*\)/g;
    return sort keys %f;
}

for my $d (sort keys %dir) {
    my ($section) = $manual =~ /^### \Q$d\E\n(.*?)(?=^#{2,3} )/ms;
    next unless defined $section;
    my ($dv) = $section =~ /^> \*\*Default:\*\* (.*?)\s*$/m;
    next unless defined $dv;
    my @want = grep { defined }
               map { $default{$_} ? render(@{ $default{$_} }, $cmd{$d}{flag}) : undef }
               fields_of($cmd{$d});
    if (!@want) {
        like $dv, qr/^(—|`\Q$d\E off;`)$/,
            "$d: the code gives it no default, the manual says — or off"
            or diag "fields: @{[ fields_of($cmd{$d}) ]}; if the code does give one, "
                  . "set it with ngx_conf_merge_*_value or ngx_conf_init_*_value";
        next;
    }
    my ($val) = $dv =~ /^`\Q$d\E\s+(.*?);`$/;
    ok defined $val, "$d: Default is `$d <value>;`" or diag "Default: $dv";
    my %tok = map { $_ => 1 } split /[\s=;.]+/, $val // '';
    for my $w (grep { $_ ne '?' } @want) {
        ok $tok{$w}, "$d: the manual's default has the code's $w" or diag "Default: $dv";
    }
}

my %var = map { $_ => 1 } $vars =~ /ngx_string\("(bytemark_\w+)"\),\s*NULL,/g;
ok scalar(keys %var) >= 4, scalar(keys %var) . ' variables';
like $manual, qr/^`\$\Q$_\E`\n: \S/m, "\$$_ is described" for sort keys %var;

# handlers: the directives that set a content handler
for my $h (grep { $table =~ /ngx_string\("\Q$_\E"\),\s*NGX_HTTP_LOC_CONF\|NGX_CONF_NOARGS/ } sort keys %dir) {
    like $manual, qr/^`\Q$h\E` — methods? `/m, "handler $h: methods in the HTTP API part";
}

# Metrics: the manual's table against the # TYPE lines of the status page
my ($mtable) = $manual =~ /^### Status and metrics\n(.*?)(?=^#{2,3} )/ms;
my %man_metric;
for my $row (($mtable // '') =~ /^\|(.*)\|[ \t]*$/mg) {
    my @c = split /\|/, $row;
    next unless @c >= 2 && $c[0] =~ /`bytemark_\w+`/;
    my ($type) = $c[1] =~ /(\w+)/;
    $man_metric{$_} = $type for $c[0] =~ /`(bytemark_\w+)`/g;
}
ok scalar(keys %man_metric) >= 10, scalar(keys %man_metric) . ' metrics in the manual';

SKIP: {
    my $so = Bytemark::Test->module_path;
    skip "no module at $so (scripts/build.sh)", 1
        unless -f $so || Bytemark::Test->module_static;
    my $t = Bytemark::Test->new();
    my ($mport, $sport) = (Bytemark::Test::free_port(), Bytemark::Test::free_port());
    # both backends configured (never reached): every metric family is declared
    $t->start_nginx(qq{
        bytemark_mongo_uri "mongodb://127.0.0.1:$mport/?serverSelectionTimeoutMS=100";
        bytemark_mysql host=127.0.0.1 port=$sport user=u database=d;
        server {
            listen 127.0.0.1:%%PORT%%;
            location = /status { bytemark_status; }
        }
    });
    my $prom = $t->get('/status?format=prometheus')->{content} // '';
    $t->stop_nginx;
    my %code_metric = $prom =~ /^# TYPE (\S+) (\S+)$/mg;
    ok scalar(keys %code_metric) >= 10, scalar(keys %code_metric) . ' metrics on the status page';
    for my $m (sort keys %code_metric) {
        is $man_metric{$m}, $code_metric{$m}, "metric $m: the manual's table says $code_metric{$m}";
    }
    for my $m (sort grep { !exists $code_metric{$_} } keys %man_metric) {
        fail "metric $m of the manual's table is not on the status page";
    }
}

# the README's synopsis is a valid configuration once its placeholders
# (a TLS listener, the auth service's name) are given local values
SKIP: {
    my $so = $ENV{BYTEMARK_MODULE} || "$REPO/build/ngx_http_bytemark_module.so";
    skip "no module at $so (scripts/build.sh)", 4 unless -f $so;
    my ($conf) = slurp("$REPO/README.md") =~ /^## Synopsis\n.*?^```nginx\n(.*?)^```$/ms;
    ok $conf, 'the README has a synopsis' or last;
    like $conf, qr/auth_request_set\s+\$\w+\s+\$upstream_http_/, 'its user id comes from auth_request';
    unlike $conf, qr/\$arg_|\$http_/, 'not from the query or a client header';
    my $dir = tempdir('bytemark-readme-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    my $port = Bytemark::Test::free_port();
    $conf =~ s/listen\s+443\s+ssl;/listen 127.0.0.1:$port;/;
    $conf =~ s{proxy_pass\s+http://[^/;]+}{proxy_pass http://127.0.0.1:$port};
    my $temp = "    access_log off; client_body_temp_path $dir/cb; proxy_temp_path $dir/px;\n"
             . "    fastcgi_temp_path $dir/fc; uwsgi_temp_path $dir/uw; scgi_temp_path $dir/sc;\n";
    $conf =~ s/^(http \{\n)/$1$temp/m;
    $conf = "load_module $so;\nerror_log $dir/error.log;\npid $dir/nginx.pid;\nevents {}\n$conf";
    open my $fh, '>', "$dir/nginx.conf" or die $!;
    print $fh $conf;
    close $fh;
    my $out = `${\ Bytemark::Test->nginx_bin} -t -p $dir/ -c $dir/nginx.conf 2>&1`;
    is $? >> 8, 0, "the README's synopsis passes nginx -t" or diag $out;
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

# the Backends section's complete example (two named backends, a replica,
# TLS, secrets in files, health) is valid once its files exist
SKIP: {
    my $so = $ENV{BYTEMARK_MODULE} || "$REPO/build/ngx_http_bytemark_module.so";
    skip "no module at $so (scripts/build.sh)", 2 unless -f $so;
    my ($conf) = $manual =~ /^## Backends\n.*?^```nginx\n(.*?)^```$/ms;
    ok $conf, 'the Backends section has an example' or last;
    my $dir = tempdir('bytemark-manual-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    my %files = ('tenant_a.mongo-uri' => "mongodb://edge:s3cret\@10.0.1.10:27017/?tls=true&tlsCAFile=$dir/ca.pem\n",
                 'tenant_a.mysql-pw' => "s3cret\n", 'tenant_b.mysql-pw' => "s3cret\n",
                 'ca.pem' => "-\n", 'client.pem' => "-\n", 'client.key' => "-\n");
    for my $f (keys %files) {
        open my $fh, '>', "$dir/$f" or die $!;
        print $fh $files{$f};
        close $fh;
    }
    $conf =~ s{/etc/nginx/bytemark/}{$dir/}g;
    my $n = 0;
    $conf =~ s{listen [^;]+;}{'listen unix:' . $dir . '/l' . $n++ . '.sock;'}ge;
    my $temp = "    client_body_temp_path $dir/cb; proxy_temp_path $dir/px;\n"
             . "    fastcgi_temp_path $dir/fc; uwsgi_temp_path $dir/uw; scgi_temp_path $dir/sc;\n"
             . "    access_log off;\n";
    $conf =~ s/^(http \{\n)/$1$temp/m;
    $conf = "load_module $so;\nerror_log $dir/error.log;\npid $dir/nginx.pid;\nevents {}\n$conf";
    open my $fh, '>', "$dir/nginx.conf" or die $!;
    print $fh $conf;
    close $fh;
    my $out = `${\ Bytemark::Test->nginx_bin} -t -p $dir/ -c $dir/nginx.conf 2>&1`;
    is $? >> 8, 0, "the Backends example passes nginx -t" or diag $out;
    unlike `${\ Bytemark::Test->nginx_bin} -T -p $dir/ -c $dir/nginx.conf 2>&1`, qr/s3cret/,
        'nginx -T of the Backends example prints no secret';
}

done_testing;
