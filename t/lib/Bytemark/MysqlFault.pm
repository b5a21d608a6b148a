package Bytemark::MysqlFault;

# A TCP relay in front of MariaDB that breaks a connection at a chosen
# point of the MySQL protocol, for the tests that cause a failure in the
# middle of an operation. The mode is read from a file at every accept and
# at every COM_STMT_EXECUTE (a client packet with sequence 0 and command
# 0x17), so a test switches it while nginx runs:
#
#   pass            relay everything
#   refuse          close a new connection at once (killed during connect)
#   stall-connect   accept, never relay (a server paused during connect)
#   kill-execute    close both sides when an execute arrives
#   stall-execute   relay the execute, withhold every byte of the answer
#   half-result     relay the execute and the first 24 bytes of the answer,
#                   withhold the rest (a half-read result)
#   kill-fetch      as half-result, then close both sides
#   fail-rollback   answer a ROLLBACK query with an error without relaying
#                   it: the server's transaction stays open
#   stall-commit    relay a COMMIT query, withhold every byte of the answer
#
# A mode ending in "!" stays; any other is used once, then the next one
# given applies ("pass" after the last). Each event is a line of the events file: "accept N",
# "client-eof N" (nginx closed connection N), "client-quit N" (nginx sent
# COM_QUIT on it), "fault N MODE".

use strict;
use warnings;

use IO::Select;
use IO::Socket::INET;
use POSIX qw(_exit setpgid WNOHANG);
use Time::HiRes qw(time sleep);

sub start {
    my ($class, $t, %o) = @_;
    my $to = $o{to} or die 'to => port';
    my $listen = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                       Proto => 'tcp', Listen => 128, ReuseAddr => 1)
        or die "fault relay listen: $!";
    my $port = $listen->sockport;
    my $dir = $t->dir;
    my $self = bless { port => $port, dir => $dir, owner => $$,
                       mode_file => "$dir/fault-$port.mode",
                       events_file => "$dir/fault-$port.events" }, $class;
    $self->mode('pass');
    open my $e, '>', $self->{events_file} or die $!;
    close $e;
    my $parent = $$;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        setpgid(0, 0);
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', '/dev/null';
        open STDERR, '>>', "$dir/fault-$port.log";
        $SIG{PIPE} = 'IGNORE';
        $SIG{$_} = 'DEFAULT' for qw(INT HUP);    # not the test's own handlers
        $SIG{TERM} = sub { _exit(0) };
        eval { $self->_loop($listen, $to, $parent); 1 } or print STDERR "fault relay: $@";
        _exit(1);
    }
    close $listen;
    $self->{pid} = $pid;
    open my $p, '>', "$dir/fault-$pid.pid" or die $!;
    print $p "$pid\n";
    close $p;
    return $self;
}

sub port { $_[0]{port} }

# One mode, or several, used in turn: mode('kill-execute', 'refuse!')
# kills the next execute, then refuses every new connection.
sub mode {
    my ($self, @modes) = @_;
    my $tmp = "$self->{mode_file}.tmp";
    open my $f, '>', $tmp or die $!;
    print $f "$_\n" for @modes;
    close $f;
    rename $tmp, $self->{mode_file} or die $!;
}

# The events so far, as [kind, connection number, extra].
sub events {
    my $self = shift;
    open my $f, '<', $self->{events_file} or return ();
    return map { chomp; [split / /] } <$f>;
}

sub count {
    my ($self, $kind) = @_;
    return scalar grep { $_->[0] eq $kind } $self->events;
}

# Connection numbers nginx closed (its EOF, or its COM_QUIT: the server
# then closes too, and its EOF may be the one the relay sees first).
sub closed_by_client {
    my $self = shift;
    return map { $_->[1] } grep { $_->[0] eq 'client-eof' || $_->[0] eq 'client-quit' } $self->events;
}

sub stop {
    my $self = shift;
    my $pid = delete $self->{pid} or return;
    kill 'TERM', $pid;
    my $end = time + 5;
    sleep 0.02 while waitpid($pid, WNOHANG) == 0 && time < $end;
    if (kill 0, $pid) { kill 'KILL', $pid; waitpid $pid, 0 }
    unlink "$self->{dir}/fault-$pid.pid";
}

sub DESTROY {
    my $self = shift;
    return unless $self->{owner} && $$ == $self->{owner};
    local ($?, $@, $!);
    $self->stop;
}

sub _event {
    my ($self, @what) = @_;
    open my $f, '>>', $self->{events_file} or die $!;
    print $f "@what\n";
    close $f;
}

# The mode, if it is one of @kinds (the faults of this point of the
# protocol), else 'pass'; a one-shot mode is used up.
sub _take_mode {
    my ($self, @kinds) = @_;
    open my $f, '<', $self->{mode_file} or return 'pass';
    chomp(my @m = <$f>);
    close $f;
    my $m = $m[0] // 'pass';
    my $sticky = $m =~ s/!$//;
    return 'pass' unless grep { $_ eq $m } @kinds;
    unless ($sticky) { shift @m; $self->mode(@m ? @m : 'pass') }
    return $m;
}

sub _loop {
    my ($self, $listen, $to, $parent) = @_;
    my $sel = IO::Select->new($listen);
    my $n = 0;
    my %c;    # fileno of either side => connection state

    my $close = sub {
        my $st = shift;
        for my $s (grep { $_ } $st->{client}, $st->{server}) {
            delete $c{fileno $s};
            $sel->remove($s);
            close $s;
        }
        $st->{client} = $st->{server} = undef;
    };

    while (1) {
        _exit(0) if getppid() != $parent;
        for my $fh ($sel->can_read(0.25)) {
            if ($fh == $listen) {
                my $cl = $listen->accept or next;
                my $st = { n => ++$n, client => $cl, cbuf => '', withhold => 0 };
                $self->_event('accept', $st->{n});
                my $mode = $self->_take_mode(qw(refuse stall-connect));
                if ($mode eq 'refuse') {
                    $self->_event('fault', $st->{n}, $mode);
                    close $cl;
                    next;
                }
                $c{fileno $cl} = $st;
                $sel->add($cl);
                if ($mode eq 'stall-connect') {
                    $self->_event('fault', $st->{n}, $mode);
                    $st->{stalled} = 1;
                    next;
                }
                my $sv = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $to,
                                               Proto => 'tcp', Timeout => 5);
                if (!$sv) { $close->($st); next }
                $st->{server} = $sv;
                $c{fileno $sv} = $st;
                $sel->add($sv);
                next;
            }
            my $st = $c{fileno $fh} or next;
            my $got = sysread($fh, my $data, 65536);
            my $from_client = $st->{client} && $fh == $st->{client};
            if (!$got) {
                $self->_event('client-eof', $st->{n}) if $from_client;
                $close->($st);
                next;
            }
            if ($from_client) {
                next if $st->{stalled};
                # find a COM_STMT_EXECUTE among the client's packets
                $st->{cbuf} .= $data;
                my ($fault, $fake);
                while (length $st->{cbuf} >= 4) {
                    my ($len, $seq) = (unpack('V', substr($st->{cbuf}, 0, 3) . "\0"),
                                       ord substr($st->{cbuf}, 3, 1));
                    last if length $st->{cbuf} < 4 + $len;
                    my $cmd = $len ? ord substr($st->{cbuf}, 4, 1) : -1;
                    my $sql = $cmd == 0x03 ? substr($st->{cbuf}, 5, $len - 1) : '';
                    substr($st->{cbuf}, 0, 4 + $len) = '';
                    # COM_QUIT: nginx closes it; the server, told so, may
                    # close its side before nginx's EOF reaches the relay
                    $self->_event('client-quit', $st->{n}) if $seq == 0 && $cmd == 0x01;
                    if ($seq == 0 && $cmd == 0x17) {
                        my $mode = $self->_take_mode(qw(kill-execute stall-execute
                                                        half-result kill-fetch));
                        $fault = $mode unless $mode eq 'pass';
                    }
                    if ($seq == 0 && $sql =~ /^\s*(ROLLBACK|COMMIT)\b/i) {
                        my $mode = $self->_take_mode(uc $1 eq 'COMMIT' ? 'stall-commit'
                                                                       : 'fail-rollback');
                        $fault = $mode unless $mode eq 'pass';
                    }
                }
                if (defined $fault && $fault eq 'fail-rollback') {
                    # an ERR packet (1105 ER_UNKNOWN_ERROR), sequence 1
                    my $err = "\xff" . pack('v', 1105) . '#HY000' . 'rollback refused by the fault relay';
                    $self->_event('fault', $st->{n}, $fault);
                    syswrite($st->{client}, substr(pack('V', length $err), 0, 3) . "\x01" . $err);
                    next;
                }
                if (defined $fault && $fault eq 'stall-commit') {
                    $self->_event('fault', $st->{n}, $fault);
                    $st->{withhold} = 0;
                    $st->{limited} = 1;
                    syswrite($st->{server}, $data) if $st->{server};
                    next;
                }
                if (defined $fault) {
                    $self->_event('fault', $st->{n}, $fault);
                    if ($fault eq 'kill-execute') { $close->($st); next }
                    $st->{withhold} = $fault eq 'stall-execute' ? 0 : 24;
                    $st->{then_kill} = $fault eq 'kill-fetch';
                    $st->{limited} = 1;
                }
                syswrite($st->{server}, $data) if $st->{server};
                next;
            }
            # from the server
            if ($st->{limited}) {
                my $take = $st->{withhold} < length $data ? $st->{withhold} : length $data;
                syswrite($st->{client}, substr($data, 0, $take)) if $take;
                $st->{withhold} -= $take;
                if ($st->{withhold} == 0 && $st->{then_kill}) { $close->($st); next }
                next;
            }
            syswrite($st->{client}, $data) if $st->{client};
        }
    }
}

1;
