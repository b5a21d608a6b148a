package Bytemark::Load;

# Load, faults and server-side measurements for the pool, fault and reload
# tests (t/22-event-loop.t ... t/27-mongo-hosts.t), on top of Bytemark::Test.
# Core Perl only.
#
#   use Bytemark::Load qw(http_raw send_raw read_raw answered);
#
#   # raw HTTP/1.1 with Connection: close; {status, headers, body, t0, t1,
#   # error}; status 599 on a connection error, a timeout or a short body
#   my $r = http_raw($t->nginx_port, '/t?user_id=1');
#
#   # a request left pending on purpose: send now, read later
#   my $s = send_raw($t->nginx_port, '/t?user_id=1');
#   ... answered($s) ... # true once the answer (or EOF) is readable
#   my $r = read_raw($s);
#
#   # N forked clients, each running requests until ->finish (or `requests`
#   # each); every request is recorded (by the child, in the test's dir)
#   my $load = Bytemark::Load->start($t, clients => 4, paths => [...],
#       requests => 200, pause => 0.005, check => sub { ($path, $res) = @_; error or undef });
#   while ($load->running) { ... sample something ... }
#   my $recs = $load->finish;    # [{client, n, path, status, source, t0, t1, error}, ...]
#
#   # a TCP relay in a forked process: holds every chunk `delay` seconds in
#   # each direction; `hello => [bson elements]` appends those elements to
#   # every MongoDB hello reply (to make a standalone look like a mongos or
#   # a replica-set primary)
#   my $p = Bytemark::Load::Proxy->start($t, to => $t->mysql_port, delay => 1);
#   $p->port; $p->stop;
#
#   freeze($t, 'mysql')   # pause_mysql (or 'mongo'), then wait until every
#                         # thread of the server is really stopped
#
#   Bytemark::Load::mysql_conns($t)        # server-side connections of user bytemark
#   Bytemark::Load::mysql_status($t, 'Connections')   # SHOW GLOBAL STATUS value
#
# Every process forked here is in its own process group with a pid file in
# the test's dir (the harness' watchdog kills it should the test die), exits
# by itself when the test process goes away, and is reaped by pid.

use strict;
use warnings;

use Exporter 'import';
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use POSIX qw(_exit setpgid WNOHANG);
use Socket qw(SHUT_WR);
use Time::HiRes qw(time sleep);

our @EXPORT_OK = qw(http_raw send_raw read_raw answered freeze mysql_conns mysql_conn_ids
                    mysql_status nginx_children tcp_owners bson_str bson_int
                    bson_bool bson_str_array summary);

my $JSON = JSON::PP->new->utf8->canonical;
my $SEQ = 0;

# ---------------------------------------------------------------------------
# raw HTTP

sub send_raw {
    my ($port, $path, %o) = @_;
    my $method = $o{method} // 'GET';
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp', Timeout => $o{timeout} // 10)
        or return;
    my $body = $o{body} // '';
    my $req = "$method $path HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            . "User-Agent: bytemark-load/1\r\n";
    $req .= "$_: $o{headers}{$_}\r\n" for sort keys %{ $o{headers} // {} };
    $req .= 'Content-Length: ' . length($body) . "\r\n" if length $body || $method eq 'POST';
    $req .= "\r\n$body";
    my $off = 0;
    while ($off < length $req) {
        my $n = syswrite($s, $req, length($req) - $off, $off);
        return unless $n;
        $off += $n;
    }
    ${*$s}{bytemark_t0} = $o{t0} // time;
    return $s;
}

# True when the server has answered (or closed): something is readable.
sub answered {
    my ($s) = @_;
    return IO::Select->new($s)->can_read(0) ? 1 : 0;
}

sub read_raw {
    my ($s, %o) = @_;
    my $t0 = ${*$s}{bytemark_t0} // time;
    my $end = time + ($o{timeout} // 30);
    my $sel = IO::Select->new($s);
    my $buf = '';
    my $err;
    while (1) {
        my $left = $end - time;
        if ($left <= 0) { $err = 'timeout'; last }
        next unless $sel->can_read($left);
        my $n = sysread($s, $buf, 65536, length $buf);
        if (!defined $n) { $err = "read: $!"; last }
        last if $n == 0;
    }
    close $s;
    my $res = { t0 => $t0, t1 => time, status => 599, headers => {}, body => '' };
    if ($buf !~ /\A(HTTP\/1\.[01]) (\d{3})[^\r\n]*\r\n(.*?)\r\n\r\n(.*)\z/s) {
        $res->{error} = $err // (length $buf ? 'malformed response' : 'no response');
        $res->{raw} = substr($buf, 0, 300);
        return $res;
    }
    my ($code, $head, $body) = ($2, $3, $4);
    for my $line (split /\r\n/, $head) {
        my ($k, $v) = $line =~ /^([^:]+):\s*(.*)$/ or next;
        $res->{headers}{lc $k} = $v;
    }
    if (($res->{headers}{'transfer-encoding'} // '') =~ /chunked/i) {
        my $plain = '';
        my $ok = 0;
        while ($body =~ s/\A([0-9a-fA-F]+)[^\r\n]*\r\n//) {
            my $len = hex $1;
            if ($len == 0) { $ok = 1; last }
            last if length($body) < $len + 2;
            $plain .= substr($body, 0, $len);
            substr($body, 0, $len + 2) = '';
        }
        return { %$res, error => 'incomplete chunked body' } unless $ok;
        $body = $plain;
    } elsif (defined(my $cl = $res->{headers}{'content-length'})) {
        return { %$res, error => "short body: " . length($body) . " of $cl" }
            if length $body != $cl;
    }
    return { %$res, error => $err } if $err;
    $res->{status} = $code;
    $res->{body} = $body;
    return $res;
}

sub http_raw {
    my ($port, $path, %o) = @_;
    my $t0 = time;
    my $s = send_raw($port, $path, %o, t0 => $t0)
        or return { status => 599, error => "connect/send: $!", headers => {}, body => '',
                    t0 => $t0, t1 => time };
    return read_raw($s, %o);
}

# "800 requests: 200 x 795, 503 x 5"
sub summary {
    my ($recs) = @_;
    my %n;
    $n{ $_->{status} }++ for @$recs;
    return scalar(@$recs) . ' requests: ' . join(', ', map { "$_ x $n{$_}" } sort keys %n);
}

# ---------------------------------------------------------------------------
# forked clients

sub start {
    my ($class, $t, %o) = @_;
    my $self = bless {
        t => $t, owner => $$, dir => $t->dir, tag => sprintf('load-%d-%d', $$, ++$SEQ),
        pids => {}, status => {},
    }, $class;
    my $port = $o{port} // $t->nginx_port;
    my $paths = $o{paths} or die 'paths => [...] or sub';
    my $stop = "$self->{dir}/$self->{tag}.stop";
    unlink $stop;
    $self->{stopfile} = $stop;
    my $parent = $$;
    for my $i (1 .. ($o{clients} // 2)) {
        my $out = "$self->{dir}/$self->{tag}.$i.log";
        $self->{logs}{$i} = $out;
        my $pid = fork // die "fork: $!";
        if (!$pid) {
            setpgid(0, 0);
            $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP);
            $SIG{PIPE} = 'IGNORE';
            my $ok = eval {
                open my $fh, '>', $out or die "$out: $!";
                $fh->autoflush(1);
                for (my $n = 0; ; $n++) {
                    last if defined $o{requests} && $n >= $o{requests};
                    last if -e $stop || getppid() != $parent;
                    my $path = ref $paths eq 'CODE' ? $paths->($i, $n)
                             : $paths->[($n + $i) % @$paths];
                    my $r = http_raw($port, $path, timeout => $o{timeout} // 30);
                    my $err = $r->{error};
                    if (!$err && $o{check}) {
                        $err = eval { $o{check}->($path, $r) } // ($@ ? "check died: $@" : undef);
                    }
                    my %rec = (client => $i, n => $n, path => $path, status => 0 + $r->{status},
                               source => $r->{headers}{'x-bytemark-source'} // '',
                               t0 => $r->{t0}, t1 => $r->{t1});
                    if ($err || $r->{status} != 200) {
                        $rec{error} = $err if $err;
                        $rec{body} = substr($r->{body} // '', 0, 300);
                        $rec{retry_after} = $r->{headers}{'retry-after'};
                        $rec{ctype} = $r->{headers}{'content-type'};
                    }
                    print $fh $JSON->encode(\%rec), "\n";
                    sleep $o{pause} if $o{pause};
                }
                close $fh;
                1;
            };
            print STDERR "# load client $i: $@" unless $ok;
            _exit($ok ? 0 : 1);
        }
        $self->{pids}{$pid} = $i;
        _spew("$self->{dir}/$self->{tag}-$pid.pid", "$pid\n");
    }
    return $self;
}

# True while a client still runs (reaps those that ended).
sub running {
    my $self = shift;
    for my $pid (keys %{ $self->{pids} }) {
        next if exists $self->{status}{$pid};
        $self->{status}{$pid} = $? if waitpid($pid, WNOHANG) == $pid;
    }
    return grep { !exists $self->{status}{$_} } keys %{ $self->{pids} };
}

sub stop {
    my $self = shift;
    _spew($self->{stopfile}, "stop\n") if $self->{stopfile};
}

# Stops the clients (after their current request), reaps them and returns
# every record, ordered by start time. Dies when a client failed itself.
sub finish {
    my ($self, %o) = @_;
    $self->stop;
    my $end = time + ($o{timeout} // 60);
    sleep 0.02 while $self->running && time < $end;
    my @left = $self->running;
    if (@left) {
        kill 'KILL', map { -$_ } @left;
        waitpid $_, 0 for @left;
        $self->{status}{$_} = 'killed' for @left;
    }
    my @recs;
    for my $i (sort keys %{ $self->{logs} }) {
        open my $fh, '<', $self->{logs}{$i} or next;
        while (my $l = <$fh>) {
            chomp $l;
            push @recs, $JSON->decode($l) if length $l;
        }
    }
    unlink values %{ $self->{logs} }, $self->{stopfile};
    unlink "$self->{dir}/$self->{tag}-$_.pid" for keys %{ $self->{pids} };
    my @bad = grep { $self->{status}{$_} ne '0' } keys %{ $self->{pids} };
    die "load clients failed: " . join(', ', map { "$_: $self->{status}{$_}" } @bad) . "\n" if @bad;
    $self->{pids} = {};
    return [ sort { $a->{t0} <=> $b->{t0} } @recs ];
}

sub DESTROY {
    my $self = shift;
    return unless $self->{owner} && $$ == $self->{owner} && %{ $self->{pids} // {} };
    local ($?, $@, $!);
    eval { $self->finish(timeout => 5) };
}

sub _spew {
    my ($f, $s) = @_;
    open my $fh, '>', $f or die "$f: $!";
    print $fh $s;
    close $fh;
}

# ---------------------------------------------------------------------------
# a server frozen for sure

# SIGSTOP stops a multi-threaded process only once the thread that takes the
# signal runs: on a busy machine its other threads can still answer a query
# or two meanwhile. freeze() pauses the server through the harness, then
# waits until every one of its threads is in the stopped state.
sub freeze {
    my ($t, $what) = @_;
    my $pid;
    if ($what eq 'mysql') { $t->pause_mysql; $pid = $t->mysql_pid }
    elsif ($what eq 'mongo') { $t->pause_mongo; $pid = $t->mongo_pid }
    else { die "freeze: mysql or mongo, not $what" }
    my $end = time + 10;
    while (1) {
        my @state;
        for my $f (glob "/proc/$pid/task/*/stat") {
            open my $fh, '<', $f or next;
            my $st = <$fh> // '';
            push @state, $st =~ /\) (\S) / ? $1 : '?';
        }
        return 1 if @state && !grep { $_ ne 'T' && $_ ne 't' } @state;
        die "freeze: $what (pid $pid) not stopped after 10 s: @state\n" if time > $end;
        sleep 0.005;
    }
}

# ---------------------------------------------------------------------------
# server-side measurements

# Connections of the module's MySQL user, seen by the server.
sub mysql_conns {
    my ($t) = @_;
    return $t->sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'bytemark'")->[0][0];
}

# { id => client port } of those connections.
sub mysql_conn_ids {
    my ($t) = @_;
    my $rows = $t->sql("SELECT ID, HOST FROM information_schema.PROCESSLIST WHERE USER = 'bytemark'");
    return { map { $_->[0] => ($_->[1] =~ /:(\d+)$/ ? $1 : undef) } @$rows };
}

sub mysql_status {
    my ($t, $name) = @_;
    my $rows = $t->sql("SHOW GLOBAL STATUS LIKE '$name'");
    return $rows->[0][1];
}

# Children of the nginx master (current workers and old ones shutting down).
sub nginx_children {
    my ($t) = @_;
    my $m = $t->nginx_pid or return;
    my @kids;
    for my $f (glob '/proc/[0-9]*/stat') {
        open my $fh, '<', $f or next;
        my $s = <$fh> // '';
        push @kids, $1 if $s =~ /^(\d+) \(.*\) (\S) (\d+) /s && $3 == $m && $2 ne 'Z';
    }
    return @kids;
}

# tcp_owners(\@local_ports, \@pids): { local port => pid } for the
# established 127.0.0.1 sockets with those local ports that belong to one of
# those processes (a port missing from the result has no owner among them).
sub tcp_owners {
    my ($ports, $pids) = @_;
    my %want = map { $_ => 1 } @$ports;
    my %inode;    # inode => port
    open my $fh, '<', '/proc/net/tcp' or return {};
    while (my $l = <$fh>) {
        my @f = split ' ', $l;
        next unless @f > 9 && $f[1] =~ /^0100007F:([0-9A-F]{4})$/;
        my $port = hex $1;
        $inode{ $f[9] } = $port if $want{$port} && $f[3] eq '01';
    }
    close $fh;
    my %owner;
    for my $pid (@$pids) {
        for my $fd (glob "/proc/$pid/fd/*") {
            my $l = readlink $fd or next;
            next unless $l =~ /^socket:\[(\d+)\]$/ && exists $inode{$1};
            $owner{ $inode{$1} } = $pid;
        }
    }
    return \%owner;
}

# ---------------------------------------------------------------------------
# BSON elements for Proxy->start(hello => [...])

sub _cstr { my $s = shift; die "NUL in BSON key" if $s =~ /\0/; "$s\0" }
sub bson_str  { my ($k, $v) = @_; "\x02" . _cstr($k) . pack('V', length($v) + 1) . "$v\0" }
sub bson_int  { my ($k, $v) = @_; "\x10" . _cstr($k) . pack('l<', $v) }
sub bson_bool { my ($k, $v) = @_; "\x08" . _cstr($k) . ($v ? "\x01" : "\x00") }
sub bson_str_array {
    my ($k, @v) = @_;
    my $i = 0;
    my $e = join '', map { bson_str($i++, $_) } @v;
    return "\x04" . _cstr($k) . pack('V', length($e) + 5) . $e . "\0";
}

# ---------------------------------------------------------------------------

package Bytemark::Load::Proxy;

use strict;
use warnings;

use IO::Select;
use IO::Socket::INET;
use POSIX qw(_exit setpgid WNOHANG);
use Socket qw(SHUT_WR);
use Time::HiRes qw(time sleep);

sub start {
    my ($class, $t, %o) = @_;
    my $to = $o{to} or die 'to => port';
    my $listen = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $o{port} // 0,
                                       Proto => 'tcp', Listen => 128, ReuseAddr => 1)
        or die "proxy listen: $!";
    my $port = $listen->sockport;
    my $dir = $t->dir;
    my $parent = $$;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        setpgid(0, 0);
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', '/dev/null';
        open STDERR, '>>', "$dir/proxy-$port.log";
        $SIG{PIPE} = 'IGNORE';
        $SIG{$_} = 'DEFAULT' for qw(INT HUP);
        $SIG{TERM} = sub { _exit(0) };
        local $SIG{__WARN__} = sub { die @_ };    # any trouble ends the relay: stop() tells
        eval { _loop($listen, $to, $o{delay} // 0, $o{hello}, $parent); 1 }
            or print STDERR "proxy: $@";
        _exit(1);
    }
    close $listen;
    Bytemark::Load::_spew("$dir/proxy-$pid.pid", "$pid\n");
    return bless { pid => $pid, port => $port, dir => $dir, owner => $$ }, $class;
}

sub port { $_[0]{port} }

# Returns true if the relay was still running (it never dies by itself).
sub stop {
    my $self = shift;
    my $pid = delete $self->{pid} or return;
    my $was_running = waitpid($pid, WNOHANG) == 0;
    if ($was_running) {
        kill 'TERM', $pid;
        my $end = time + 5;
        my $gone = 0;
        until ($gone || time > $end) {
            $gone = waitpid($pid, WNOHANG) != 0;
            sleep 0.02 unless $gone;
        }
        if (!$gone) { kill 'KILL', $pid; waitpid $pid, 0 }
    }
    unlink "$self->{dir}/proxy-$pid.pid";
    return $was_running;
}

sub DESTROY {
    my $self = shift;
    return unless $self->{owner} && $$ == $self->{owner};
    local ($?, $@, $!);
    $self->stop;
}

# One select loop for every connection. Each direction of a connection has
# a queue of [due time, bytes] (undef bytes: the EOF, passed on as a
# shutdown); chunks are written when due.
sub _loop {
    my ($listen, $to, $delay, $hello, $parent) = @_;
    my $sel = IO::Select->new($listen);
    my (%peer, %queue, %sock, %eof_in, %from_server, %buf);
    my $extra = ref $hello ? join('', @$hello) : undef;

    my $close = sub {
        my ($fn) = @_;
        my @pair = ($fn, defined $peer{$fn} ? $peer{$fn} : ());    # copies: the hashes shrink
        for my $f (@pair) {
            next unless $sock{$f};
            $sel->remove($sock{$f});
            close $sock{$f};
            delete @{$_}{$f} for \%peer, \%queue, \%sock, \%eof_in, \%from_server, \%buf;
        }
    };

    while (1) {
        _exit(0) if getppid() != $parent;
        my $now = time;
        my $next;
        for my $q (values %queue) {
            next unless @$q;
            $next = $q->[0][0] if !defined $next || $q->[0][0] < $next;
        }
        my $wait = defined $next ? ($next - $now > 0 ? $next - $now : 0) : 0.25;
        $wait = 0.25 if $wait > 0.25;
        for my $fh ($sel->can_read($wait)) {
            if ($fh == $listen) {
                my $c = $listen->accept or next;
                my $u = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $to,
                                              Proto => 'tcp', Timeout => 5);
                if (!$u) { close $c; next }
                my ($cf, $uf) = (fileno $c, fileno $u);
                @sock{$cf, $uf} = ($c, $u);
                @peer{$cf, $uf} = ($uf, $cf);
                $queue{$cf} = [];    # bytes going to the client
                $queue{$uf} = [];    # bytes going to the server
                $from_server{$uf} = 1;
                $buf{$uf} = '';
                $sel->add($c, $u);
                next;
            }
            my $fn = fileno $fh;
            next unless defined $fn && $sock{$fn};
            my $n = sysread($fh, my $data, 65536);
            my $dst = $peer{$fn};
            if (!$n) {
                $sel->remove($fh);
                $eof_in{$fn} = 1;
                push @{ $queue{$dst} }, [time + $delay, undef];
                next;
            }
            if (defined $extra && $from_server{$fn}) {
                $buf{$fn} .= $data;
                $data = _take_messages(\$buf{$fn}, $extra);
                next unless length $data;
            }
            push @{ $queue{$dst} }, [time + $delay, $data];
        }
        $now = time;
        for my $dst (keys %queue) {
            my $q = $queue{$dst} or next;
            while (@$q && $q->[0][0] <= $now) {
                my (undef, $data) = @{ shift @$q };
                my $s = $sock{$dst};
                if (!defined $data) {
                    shutdown($s, SHUT_WR);
                    # both directions ended: done with the pair
                    if ($eof_in{$dst}) { $close->($dst); last }
                    next;
                }
                my $off = 0;
                while ($off < length $data) {
                    my $w = syswrite($s, $data, length($data) - $off, $off);
                    if (!$w) { $close->($dst); last }
                    $off += $w;
                }
                last unless $sock{$dst};
            }
        }
    }
}

# Complete MongoDB messages from the front of $$buf, with $extra appended
# to the first document of every hello reply (OP_REPLY or OP_MSG kind 0).
sub _take_messages {
    my ($buf, $extra) = @_;
    my $out = '';
    while (length $$buf >= 16) {
        my $len = unpack 'V', $$buf;
        last if length $$buf < $len;
        my $msg = substr($$buf, 0, $len, '');
        my $op = unpack 'V', substr($msg, 12, 4);
        my $doc_at = $op == 1 ? 36 : $op == 2013 ? 21 : undef;
        if (defined $doc_at && ($op != 2013 || substr($msg, 20, 1) eq "\0")) {
            my $flags = $op == 2013 ? unpack('V', substr($msg, 16, 4)) : 0;
            if ($flags & 1) {    # checksumPresent: drop it, it would be wrong
                substr($msg, -4) = '';
                substr($msg, 16, 4) = pack 'V', $flags & ~1;
            }
            my $dlen = unpack 'V', substr($msg, $doc_at, 4);
            my $doc = substr($msg, $doc_at, $dlen);
            if ($doc =~ /\x08ismaster\x00/) {
                substr($doc, -1) = $extra . "\0";
                substr($doc, 0, 4) = pack 'V', length $doc;
                substr($msg, $doc_at, $dlen) = $doc;
                substr($msg, 0, 4) = pack 'V', length $msg;
            }
        }
        $out .= $msg;
    }
    return $out;
}

1;
