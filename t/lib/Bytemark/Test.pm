package Bytemark::Test;

# Shared test harness: starts MariaDB, MongoDB (real mongod, the Python
# stand-in, or an external server) and nginx with the module, each test in its
# own temp dir on its own free ports on 127.0.0.1, and stops all of it again.
#
#   use lib 't/lib'; use Bytemark::Test;
#   my $t = Bytemark::Test->new(mysql => 1, mongo => 1);
#   $t->start_nginx(<<'EOF');
#       bytemark_mongo_uri %%MONGO_URI%%;
#       bytemark_mongo_collection %%MONGO_COLL%%;
#       bytemark_mysql %%MYSQL%%;
#       server { listen 127.0.0.1:%%PORT%%; location /t { bytemark_user_id $arg_u; bytemark_tickets; } }
#   EOF
#   my $r = $t->get('/t?u=12345');
#
# Everything started is stopped when the object goes away, in an END block
# when the test dies, and — should the test process be killed outright — by a
# small watchdog process that notices its parent is gone. Core Perl only.
#
# The servers (and nginx's master) are children of the test process: a test
# that forks must wait for its own children by pid (waitpid), never with
# wait() or waitpid(-1, ...).
#
# Environment:
#   BYTEMARK_TEST_KEEP=1          keep the temp dir (logs, confs) and say where
#   BYTEMARK_TEST_MONGO_URI=uri   use that MongoDB (per-test database, dropped at the end)
#   BYTEMARK_TEST_MONGO_KIND=standin|ferretdb|mongod   the kind of local server
#                                 (default: mongod when installed, else the stand-in)
#   BYTEMARK_FERRETDB=/path/ferretdb  FerretDB binary (default <repo>/build/ferretdb/ferretdb,
#                                 built by scripts/deps.sh from tools/ferretdb)
#   BYTEMARK_NGINX=/path/nginx    nginx binary (default /usr/sbin/nginx)
#   BYTEMARK_MODULE=/path/x.so    module (default <repo>/build/ngx_http_bytemark_module.so)
#   BYTEMARK_MODULE=static        the module is compiled into nginx (--add-module): no load_module line
#
# MySQL replication (a primary and its read replicas, as operators run them):
#   my $t = Bytemark::Test->new(mysql => 1, binlog => 1);          # the primary
#   my $r = Bytemark::Test->new(mysql => 1, replica_of => $t);     # starts empty,
#       # gets users, schema and rows from the primary's binary log (GTID)
#   $r->wait_replicated;        # the replica has applied all the primary has logged
#   $r->pause_replication;      # STOP SLAVE SQL_THREAD (kept across its restarts)
#   $r->resume_replication;     # START SLAVE SQL_THREAD
#
# TLS (certificates made by Bytemark::Certs in <dir>/tls, see certs()):
#   Bytemark::Test->new(mysql => 1, mysql_ssl => 1);   # MariaDB with --ssl-ca/-cert/-key
#       # (mysql_ssl => 'dns': its certificate names db.test only, not 127.0.0.1)
#   Bytemark::Test->new(mongo => 1, mongo_tls => 1);   # FerretDB's TLS listener too, on
#       # mongo_tls_port(); mongo_tls => 'client' makes it require client certificates.
#       # On any other MongoDB the test is skipped, before it has run anything.

use strict;
use warnings;

use Carp qw(croak);
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Path qw(remove_tree make_path);
use File::Temp qw(tempdir);
use HTTP::Tiny;
use IO::Socket::INET;
use IO::Socket::UNIX;
use JSON::PP;
use POSIX qw(:sys_wait_h setsid _exit);
use Scalar::Util qw(weaken refaddr);
use Test::More ();
use Time::HiRes qw(time sleep);

our $REPO = abs_path(dirname(__FILE__) . '/../../..');
our $PYTHON = '/usr/bin/python3';    # Debian's, with pymongo (not pyenv's)

my %LIVE;          # refaddr => weak ref, for the END block
my %USED_PORT;     # ports handed out by this process
my $DIAG_DONE;     # "# mongo: kind" printed once per test file
my $DB_SEQ = 0;    # per-process counter for external database names
my $SERVER_ID = 0; # per-process counter: MariaDB server ids, unique per test

my $JSON = JSON::PP->new->utf8->canonical->allow_nonref;

# ---------------------------------------------------------------------------
# construction / destruction

sub new {
    my ($class, %a) = @_;
    my $self = bless {
        owner     => $$,
        keep      => $ENV{BYTEMARK_TEST_KEEP} ? 1 : 0,
        paused    => {},
        mysql_on  => 0,
        mongo_on  => 0,
    }, $class;
    $LIVE{refaddr $self} = $self;
    weaken $LIVE{refaddr $self};

    $self->{dir} = tempdir('bytemark-XXXXXX', TMPDIR => 1, CLEANUP => 0);
    $self->{nginx_port} = free_port();

    if ($a{mongo}) {
        $self->{mongo_coll_name} = 'bytemark_tickets_cache';
        if ($ENV{BYTEMARK_TEST_MONGO_URI}) {
            $self->{mongo_kind} = 'external';
            $self->{mongo_uri}  = $ENV{BYTEMARK_TEST_MONGO_URI};
            $self->{mongo_db_name} = sprintf 'bt_%d_%d', $$, ++$DB_SEQ;
        } else {
            my $want = $ENV{BYTEMARK_TEST_MONGO_KIND} // '';
            croak "BYTEMARK_TEST_MONGO_KIND=$want: not standin, ferretdb or mongod"
                if $want !~ /^(|standin|ferretdb|mongod)$/;
            $self->{mongo_kind} = $want ne '' ? $want
                                : _which('mongod') ? 'mongod' : 'standin';
            $self->{mongo_db_name} = 'cache';
        }
        # A test that needs what only the stand-in has says so
        # (standin_only => 'the missing feature'); on any other server it
        # is skipped with that reason, before it has run anything.
        if ($a{standin_only} && $self->{mongo_kind} ne 'standin') {
            $self->{mongo_kind} = undef;
            Test::More::plan(skip_all => "needs the MongoDB stand-in: $a{standin_only}");
        }
    }

    if ($a{mongo_tls} && $self->{mongo_kind} && $self->{mongo_kind} ne 'ferretdb') {
        $self->{mongo_kind} = undef;
        Test::More::plan(skip_all => 'needs FerretDB\'s TLS listener '
                                   . '(BYTEMARK_TEST_MONGO_KIND=ferretdb)');
    }
    if ($a{mysql_ssl} || $a{mongo_tls}) {
        require Bytemark::Certs;
        $self->{certs} = Bytemark::Certs::make("$self->{dir}/tls");
        $self->{mysql_ssl} = $a{mysql_ssl} if $a{mysql_ssl};
        $self->{mongo_tls} = $a{mongo_tls} if $a{mongo_tls};
    }

    if ($a{binlog} || $a{replica_of}) {
        croak 'binlog / replica_of need mysql => 1' unless $a{mysql};
        $self->{mysql_server_id} = ++$SERVER_ID;
        $self->{mysql_binlog} = 1 if $a{binlog};
    }
    if (my $p = $a{replica_of}) {
        croak 'replica_of: the primary was not started with binlog => 1'
            unless $p->{mysql_binlog} && $p->{mysql_port};
        $self->{mysql_replica} = 1;    # set up by replicate_from below
    }

    $self->_start_watchdog;

    # Both servers boot at the same time: spawn, then wait for each (mongo
    # first: it boots while mariadb-install-db runs).
    $self->_mongo_spawn if $a{mongo};
    $self->_mysql_spawn if $a{mysql};
    $self->_mysql_ready if $a{mysql};
    $self->_mongo_ready if $a{mongo};
    $self->replicate_from($a{replica_of}) if $a{replica_of};

    if ($a{mongo} && !$DIAG_DONE++) {
        Test::More::diag("mongo: $self->{mongo_kind}");
    }
    return $self;
}

sub DESTROY {
    my $self = shift;
    $self->cleanup;
}

END {
    for my $t (grep { defined } values %LIVE) {
        $t->cleanup;
    }
}

# Become a child subreaper (prctl PR_SET_CHILD_SUBREAPER): nginx's daemonized
# master then stays our child and is reaped as soon as it exits instead of
# lingering as a zombie until init gets to it. Best effort.
eval {
    package Bytemark::Test::Syscall;
    no warnings;
    require 'syscall.ph';
    syscall(&SYS_prctl(), 36, 1, 0, 0, 0);
};

# A test killed by Ctrl-C or by a timeout still runs the END block.
my %SIGNUM = (HUP => 1, INT => 2, TERM => 15);
for my $sig (sort keys %SIGNUM) {
    next if defined $SIG{$sig} && $SIG{$sig} ne 'DEFAULT' && $SIG{$sig} ne '';
    $SIG{$sig} = sub {
        print STDERR "# Bytemark::Test: caught SIG$sig, cleaning up\n";
        exit 128 + $SIGNUM{$sig};
    };
}

# Stops everything this object started and removes the temp dir. Idempotent;
# does nothing in forked children of the test.
sub cleanup {
    my $self = shift;
    return if $self->{cleaned} || !$self->{owner} || $$ != $self->{owner};
    $self->{cleaned} = 1;
    local ($?, $!, $@);
    delete $LIVE{refaddr $self};

    my @err;
    eval { $self->stop_nginx if $self->{nginx_pid}; 1 } or push @err, $@;
    $self->_check_crashes;
    if ($self->{mongo_kind} && $self->{mongo_kind} eq 'external') {
        eval { $self->_mongo_cli('drop-db'); 1 } or push @err, $@;
    }
    # No need for a clean shutdown of servers whose data is thrown away.
    my $fast = $self->{keep} ? 0 : 1;
    eval { $self->stop_mongo(fast => $fast) if $self->{mongo_on} && $self->{mongo_pid}; 1 } or push @err, $@;
    eval { $self->stop_mysql(fast => $fast) if $self->{mysql_on}; 1 } or push @err, $@;
    print STDERR "# Bytemark::Test cleanup: $_" for @err;

    $self->_stop_watchdog;
    if ($self->{keep}) {
        print STDERR "# Bytemark::Test: kept $self->{dir}\n";
    } elsif ($self->{dir} && -d $self->{dir}) {
        remove_tree($self->{dir});
    }
}

# Every test fails when an nginx worker crashed or a sanitizer spoke, whether
# or not the test itself looked at the error log.
sub _check_crashes {
    my $self = shift;
    return unless $self->{dir} && -f "$self->{dir}/error.log";
    my @bad = grep { /exited on signal|AddressSanitizer|runtime error:|LeakSanitizer/ }
              split /\n/, $self->error_log;
    return unless @bad;
    Test::More::ok(0, 'no nginx worker crashed and no sanitizer report');
    Test::More::diag($_) for @bad[0 .. ($#bad < 9 ? $#bad : 9)];
}

# The watchdog is a forked process holding the read end of a pipe; the test
# keeps the write end. EOF means the test process is gone: it then kills every
# server whose pid file is still in the dir and removes the dir. The pipe is
# close-on-exec, so the servers never inherit the write end.
sub _start_watchdog {
    my $self = shift;
    pipe(my $r, my $w) or die "pipe: $!";
    my $dir  = $self->{dir};
    my $keep = $self->{keep};
    my $pid  = fork // die "fork: $!";
    if (!$pid) {
        close $w;
        # Nor the other objects' write ends: their watchdogs would never see
        # EOF while this one lives, and stopping them would wait for it.
        for my $o (grep { defined } values %LIVE) {
            close $o->{watchdog_w} if $o->{watchdog_w};
        }
        # Never hold the test's stdout: prove waits for EOF on it.
        open STDIN,  '<', '/dev/null';
        open STDOUT, '>', '/dev/null';
        open STDERR, '>', '/dev/null';
        setsid();
        $0 = "bytemark-test watchdog ($dir)";
        $SIG{$_} = 'IGNORE' for qw(INT TERM HUP PIPE);
        1 while sysread($r, my $buf, 4096);
        if (-d $dir) {
            # Every pid file names a process group leader (servers and
            # _run children get their own group): kill the whole group.
            for my $pf (glob "$dir/*.pid") {
                my $p = _read_pid($pf) or next;
                kill 'KILL', -$p;
                _kill_tree($p, 'KILL', 0);
            }
            remove_tree($dir) unless $keep;
        }
        _exit(0);
    }
    close $r;
    $self->{watchdog_pid} = $pid;
    $self->{watchdog_w}   = $w;
}

sub _stop_watchdog {
    my $self = shift;
    my $pid = delete $self->{watchdog_pid} or return;
    close delete $self->{watchdog_w};
    waitpid $pid, 0;
}

# ---------------------------------------------------------------------------
# small utilities

sub dir { $_[0]{dir} }

# A port nobody listens on now (bind to port 0 and let the kernel choose).
sub free_port {
    for (1 .. 100) {
        my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                      Proto => 'tcp', Listen => 1)
            or die "cannot bind a free port: $!";
        my $p = $s->sockport;
        close $s;
        return $p unless $USED_PORT{$p}++;
    }
    die "no free port found";
}

# wait_for(sub { ... }, $seconds, $what): poll until the sub returns true.
sub wait_for {
    my ($self, $cb, $timeout, $what) = @_;
    $timeout //= 10;
    my $end = time + $timeout;
    while (1) {
        my $v = $cb->();
        return $v if $v;
        croak "timed out after ${timeout}s waiting for " . ($what // 'condition') if time > $end;
        sleep 0.05;
    }
}

sub _which {
    my $prog = shift;
    for my $d (split /:/, $ENV{PATH} // '') {
        return "$d/$prog" if $d ne '' && -x "$d/$prog" && !-d _;
    }
    return;
}

sub _slurp {
    my $f = shift;
    open my $fh, '<:raw', $f or return '';
    local $/;
    my $s = <$fh>;
    return $s // '';
}

sub _spew {
    my ($f, $s) = @_;
    utf8::encode($s) if utf8::is_utf8($s);
    open my $fh, '>:raw', $f or die "cannot write $f: $!";
    print $fh $s;
    close $fh or die "cannot write $f: $!";
}

sub _read_pid {
    my $s = _slurp(shift);
    return $s =~ /^\s*(\d+)/ ? $1 : undef;
}

sub _tail {
    my ($text, $n) = @_;
    my @l = split /\n/, $text // '';
    @l = @l[-$n .. -1] if @l > $n;
    return join("\n", @l) . "\n";
}

# Runs a command to completion; stdio through files in the temp dir (no pipe
# deadlocks, no shell quoting). Returns ($exit_code, $stdout, $stderr).
sub _run {
    my ($self, $cmd, %o) = @_;
    my $base = "$self->{dir}/.run.$$";
    _spew("$base.in", $o{stdin} // '');
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        # Own process group, announced in run-PID.pid: should the test be
        # killed meanwhile, the watchdog kills the command and everything it
        # started (mariadb-install-db runs a bootstrap server, for one).
        POSIX::setpgid(0, 0);
        open STDIN,  '<', "$base.in";
        open STDOUT, '>', "$base.out";
        open STDERR, '>', "$base.err";
        %ENV = (%ENV, %{ $o{env} }) if $o{env};
        { no warnings "exec"; exec { $cmd->[0] } @$cmd; }
        print STDERR "cannot exec $cmd->[0]: $!\n";
        _exit(127);
    }
    _spew("$self->{dir}/run-$$.pid", "$pid\n");
    waitpid $pid, 0;
    my $st = $?;
    unlink "$self->{dir}/run-$$.pid";
    my $rc = $st & 127 ? 128 + ($st & 127) : $st >> 8;
    my ($out, $err) = (_slurp("$base.out"), _slurp("$base.err"));
    unlink "$base.in", "$base.out", "$base.err";
    return ($rc, $out, $err);
}

# Starts a long-running server as our child, in its own session (a Ctrl-C
# on the terminal reaches the test, which then stops it in order).
# Its pid goes into spawn-PID.pid at once (servers write their own pid files
# only once they are up) so that the watchdog knows about it.
sub _spawn {
    my ($self, $cmd, $log) = @_;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        eval { _spew("$self->{dir}/spawn-$$.pid", "$$\n") };
        open STDIN,  '<', '/dev/null';
        open STDOUT, '>>', $log or _exit(127);
        open STDERR, '>&', \*STDOUT;
        setsid();
        { no warnings "exec"; exec { $cmd->[0] } @$cmd; }
        print STDERR "cannot exec $cmd->[0]: $!\n";
        _exit(127);
    }
    _spew("$self->{dir}/spawn-$pid.pid", "$pid\n");
    return $pid;
}

sub _forget_spawn {
    my ($self, $pid) = @_;
    unlink "$self->{dir}/spawn-$pid.pid";
}

# True while $pid exists and is not a zombie; reaps it if it is our child.
# A multi-threaded child shows as a zombie (Z) before its other threads are
# gone, and cannot be reaped until then: it still counts as alive, otherwise
# it would be left to init.
sub _alive {
    my $pid = shift;
    return 0 unless $pid;
    return 0 if waitpid($pid, WNOHANG) == $pid;
    return 0 unless kill 0, $pid;
    my $stat = _slurp("/proc/$pid/stat");
    if ($stat =~ /^\d+ \(.*\) Z /s) {
        my $w = waitpid($pid, WNOHANG);
        return $w == 0 ? 1 : 0;    # 0: our child, not reapable yet; -1: not ours
    }
    return 1;
}

sub _children {
    my $ppid = shift;
    my @kids;
    for my $f (glob '/proc/[0-9]*/stat') {
        my $s = _slurp($f);
        push @kids, $1 if $s =~ /^(\d+) \(.*\) \S+ (\d+) /s && $2 == $ppid;
    }
    return @kids;
}

# Sends $sig to $pid (SIGCONT first: it may be paused), waits up to $timeout
# seconds for it and its children to go, then SIGKILLs whatever is left.
# Returns 1 if everything went away on $sig alone.
sub _kill_tree {
    my ($pid, $sig, $timeout) = @_;
    my @all = ($pid, _children($pid));
    kill 'CONT', @all;
    kill $sig, $pid;
    my $end = time + $timeout;
    while (time < $end) {
        return 1 unless grep { _alive($_) } @all;
        sleep 0.02;
    }
    my @left = grep { _alive($_) } @all;
    return 1 unless @left;
    kill 'KILL', @left;
    my $end2 = time + 10;
    sleep 0.02 while time < $end2 && grep { _alive($_) } @left;
    return 0;
}

sub _connectable {
    my $port = shift;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp', Timeout => 1);
    return 0 unless $s;
    close $s;
    return 1;
}

# ---------------------------------------------------------------------------
# MariaDB

sub mysql_port     { $_[0]{mysql_port} }
sub mysql_socket   { "$_[0]{dir}/mysql.sock" }
sub mysql_user     { 'bytemark' }
sub mysql_password { 's3cret-pw' }
sub mysql_db       { 'portal' }

# "host=127.0.0.1 port=N user=bytemark password=s3cret-pw database=portal"
# plus " key=value" for every extra pair (sorted). socket => 1 gives the
# socket form instead of host/port (socket => PATH uses that path).
sub mysql_directive {
    my ($self, %x) = @_;
    croak "mysql not started (new(mysql => 1))" unless $self->{mysql_port};
    my $s = delete $x{socket};
    my @p = $s ? ('socket=' . ($s eq '1' ? $self->mysql_socket : $s))
               : ('host=127.0.0.1', "port=$self->{mysql_port}");
    push @p, 'user=' . $self->mysql_user, 'password=' . $self->mysql_password,
             'database=' . $self->mysql_db;
    push @p, map { "$_=$x{$_}" } sort keys %x;
    return join ' ', @p;
}

sub start_mysql {
    my $self = shift;
    $self->_mysql_spawn;
    $self->_mysql_ready;
}

sub _mysql_spawn {
    my $self = shift;
    croak 'mysql is already running' if $self->{mysql_pid} && _alive($self->{mysql_pid});
    my $dir  = $self->{dir};
    my $data = "$dir/mysql-data";
    $self->{mysql_port} //= free_port();
    $self->{mysql_on} = 1;
    my $mariadbd = -x '/usr/sbin/mariadbd' ? '/usr/sbin/mariadbd' : (_which('mariadbd') // 'mariadbd');

    # Small and fast: tests do not need durability against OS crashes, only
    # against a killed server (flush_log_at_trx_commit=2 keeps that).
    # A private tmpdir, for mariadb-install-db's bootstrap server too: in the
    # shared /tmp concurrent bootstraps were seen tripping over each other's
    # temporary tables.
    make_path("$dir/mysql-tmp");
    my @opts = (
        "--datadir=$data",
        "--tmpdir=$dir/mysql-tmp",
        '--innodb-buffer-pool-size=32M',
        '--innodb-log-file-size=8M',
        '--skip-log-bin',    # mariadb-install-db's bootstrap; a primary's server logs (below)
        '--skip-name-resolve',
        '--character-set-server=utf8mb4',
        '--collation-server=utf8mb4_general_ci',
    );
    push @opts, '--user=root' if $> == 0;

    $self->{mysql_fresh} = !-d "$data/mysql";
    if ($self->{mysql_fresh}) {
        my ($rc, $out, $err) = $self->_run([
            _which('mariadb-install-db') // 'mariadb-install-db', '--no-defaults',
            @opts, '--auth-root-authentication-method=normal', '--skip-test-db',
        ]);
        die "mariadb-install-db failed ($rc):\n$out$err" if $rc;
    }
    $self->{mysql_pid} = $self->_spawn([
        $mariadbd, '--no-defaults', @opts,
        '--socket=' . $self->mysql_socket,
        "--port=$self->{mysql_port}",
        '--bind-address=127.0.0.1',
        "--pid-file=$dir/mariadbd.pid",
        "--log-error=$dir/mariadb.err",
        '--innodb-flush-log-at-trx-commit=2',
        '--innodb-doublewrite=0',
        '--innodb-buffer-pool-dump-at-shutdown=0',
        '--innodb-buffer-pool-load-at-startup=0',
        '--performance-schema=OFF',
        '--max-connections=500',
        $self->_mysql_repl_opts,
        $self->_mysql_ssl_opts,
    ], "$dir/mariadb.out");
}

# Server options of a primary (binary log, row format: what replicas need;
# MariaDB always has GTIDs, domain 0) and of a replica (its slave threads
# are started by the harness, not by the server: a paused SQL thread stays
# paused across a restart).
sub _mysql_repl_opts {
    my $self = shift;
    my $id = $self->{mysql_server_id} or return;
    my @o = ("--server-id=$id");
    if ($self->{mysql_binlog}) {
        push @o, '--log-bin=mysql-bin', '--binlog-format=ROW', '--gtid-strict-mode=ON',
                 '--sync-binlog=0';
    }
    push @o, '--relay-log=relay-bin', '--skip-slave-start', '--slave-net-timeout=10'
        if $self->{mysql_replica};
    return @o;
}

# mysql_ssl => 1: the server's certificate for localhost and 127.0.0.1;
# mysql_ssl => 'dns': one for the name db.test only
sub _mysql_ssl_opts {
    my $self = shift;
    my $c = $self->{mysql_ssl} && $self->{certs} or return;
    my $k = $self->{mysql_ssl} eq 'dns' ? 'server_dns' : 'server';
    return ("--ssl-ca=$c->{ca}", '--ssl-cert=' . $c->{"${k}_cert"},
            '--ssl-key=' . $c->{"${k}_key"});
}

# The files of Bytemark::Certs::make(): ca, other_ca, server_cert,
# server_key, client_cert, client_key, client_pem (new(... mysql_ssl or
# mongo_tls => 1) makes them).
sub certs {
    my $self = shift;
    return $self->{certs} // croak 'no certificates: new(mysql_ssl => 1 or mongo_tls => 1)';
}

sub _mysql_ready {
    my $self = shift;
    my $pid  = $self->{mysql_pid};
    my $end  = time + 60;
    while (1) {
        if (!_alive($pid)) {
            $self->_forget_spawn(delete $self->{mysql_pid});
            die "mariadbd exited during startup:\n"
              . _tail(_slurp("$self->{dir}/mariadb.err") . _slurp("$self->{dir}/mariadb.out"), 30);
        }
        # The socket only accepts once the server is ready for connections.
        if (-S $self->mysql_socket
            && IO::Socket::UNIX->new(Peer => $self->mysql_socket, Type => SOCK_STREAM)) {
            last;
        }
        die "mariadbd did not become ready in 60s:\n" . _tail(_slurp("$self->{dir}/mariadb.err"), 30)
            if time > $end;
        sleep 0.03;
    }
    my $fresh = delete $self->{mysql_fresh};
    if ($self->{mysql_replica}) {
        # Empty when fresh: replicate_from() gets it all from the primary.
        $self->_start_slave unless $fresh;
    } elsif ($fresh) {
        my ($u, $pw, $db) = ($self->mysql_user, $self->mysql_password, $self->mysql_db);
        my ($ru, $rpw) = ($self->mysql_repl_user, $self->mysql_repl_password);
        # On a primary all of this goes to the binary log, and so to its
        # replicas: they start empty.
        $self->sql(<<"SQL" . ($self->{mysql_binlog} ? <<"REPL" : ''), db => undef);
CREATE DATABASE IF NOT EXISTS `$db` CHARACTER SET utf8mb4;
CREATE USER IF NOT EXISTS '$u'\@'127.0.0.1' IDENTIFIED BY '$pw';
CREATE USER IF NOT EXISTS '$u'\@'localhost' IDENTIFIED BY '$pw';
GRANT ALL PRIVILEGES ON `$db`.* TO '$u'\@'127.0.0.1';
GRANT ALL PRIVILEGES ON `$db`.* TO '$u'\@'localhost';
SQL
CREATE USER IF NOT EXISTS '$ru'\@'127.0.0.1' IDENTIFIED BY '$rpw';
GRANT REPLICATION SLAVE ON *.* TO '$ru'\@'127.0.0.1';
REPL
        $self->sql(_slurp("$REPO/sql/schema.sql"));
    }
}

# ---------------------------------------------------------------------------
# MariaDB replication

sub mysql_repl_user     { 'bytemark_repl' }
sub mysql_repl_password { 'r3pl-pw' }
sub mysql_server_id     { $_[0]{mysql_server_id} }
sub is_replica          { $_[0]{mysql_replica} ? 1 : 0 }

# Makes this (empty, replica_of) server a replica of $primary: CHANGE MASTER
# TO with GTIDs from the start of the primary's binary log, which holds
# everything since its first start (users, schema, rows), then waits until
# it has caught up.
sub replicate_from {
    my ($self, $primary) = @_;
    croak 'replicate_from: this server was not started with replica_of'
        unless $self->{mysql_replica} && $self->{mysql_pid};
    croak 'replicate_from: the primary has no binary log (binlog => 1)'
        unless $primary->{mysql_binlog} && $primary->{mysql_pid};
    $self->{primary} = $primary;
    weaken $self->{primary};
    my ($port, $u, $pw) = ($primary->mysql_port, $primary->mysql_repl_user,
                           $primary->mysql_repl_password);
    # A short connect retry: a test stops and restarts the primary and
    # expects the replica to follow within seconds (default 60 s).
    $self->sql(<<"SQL", db => undef);
CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=$port,
    MASTER_USER='$u', MASTER_PASSWORD='$pw',
    MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1;
SQL
    $self->_start_slave;
    $self->wait_replicated;
}

sub _start_slave {
    my $self = shift;
    $self->sql($self->{repl_paused} ? 'START SLAVE IO_THREAD' : 'START SLAVE', db => undef);
}

# wait_replicated([$timeout]): until the replica has applied every GTID the
# primary has logged so far (MASTER_GTID_WAIT on the primary's
# gtid_binlog_pos). Dies with the replica's slave status on a timeout.
sub wait_replicated {
    my ($self, $timeout) = @_;
    $timeout //= 30;
    my $p = $self->{primary} or croak 'wait_replicated: not a replica';
    croak 'wait_replicated: replication is paused' if $self->{repl_paused};
    my $pos = $p->sql('SELECT @@GLOBAL.gtid_binlog_pos', db => undef)->[0][0];
    return 1 if $pos eq '';
    my $r = $self->sql("SELECT MASTER_GTID_WAIT('$pos', $timeout)", db => undef)->[0][0];
    return 1 if $r eq '0';
    my $st = $self->slave_status;
    $st->{gtid_slave_pos} = $self->sql('SELECT @@GLOBAL.gtid_slave_pos', db => undef)->[0][0];
    croak "replica did not reach the primary's $pos in ${timeout}s: "
        . join(', ', map { "$_=" . ($st->{$_} // '?') }
               qw(Slave_IO_Running Slave_SQL_Running gtid_slave_pos Gtid_IO_Pos
                  Last_IO_Error Last_SQL_Error));
}

# SHOW SLAVE STATUS as a hashref (column => value).
sub slave_status {
    my $self = shift;
    my ($rc, $out, $err) = $self->_run([
        _which('mariadb') // 'mariadb', '--no-defaults', '--protocol=SOCKET',
        '--socket=' . $self->mysql_socket, '--user=root', '--vertical',
        '--connect-timeout=10', '-e', 'SHOW SLAVE STATUS',
    ]);
    croak "SHOW SLAVE STATUS failed ($rc): $err" if $rc;
    return { $out =~ /^\s*(\w+): ?(.*)$/mg };
}

# The SQL thread stops applying what the primary logs (the IO thread still
# fetches it): until resume_replication, the replica keeps the state it had,
# a difference that tells which server answered. Kept across a restart of
# the replica.
sub pause_replication {
    my $self = shift;
    croak 'pause_replication: not a replica' unless $self->{mysql_replica};
    $self->sql('STOP SLAVE SQL_THREAD', db => undef);
    $self->{repl_paused} = 1;
}

sub resume_replication {
    my $self = shift;
    croak 'resume_replication: not a replica' unless $self->{mysql_replica};
    $self->sql('START SLAVE SQL_THREAD', db => undef);
    delete $self->{repl_paused};
}

# stop_mysql(fast => 1) kills it (SIGKILL; InnoDB recovers on the next start,
# committed data survives); default is a clean shutdown (SIGTERM).
sub stop_mysql {
    my ($self, %o) = @_;
    my $pid = delete $self->{mysql_pid} or return;
    delete $self->{paused}{mysql};
    my $ok = _kill_tree($pid, $o{fast} ? 'KILL' : 'TERM', 60);
    $self->_forget_spawn($pid);
    warn "# mariadbd did not stop on SIGTERM, killed\n" unless $ok || $o{fast};
    unlink "$self->{dir}/mariadbd.pid", $self->mysql_socket;
    return $ok;
}

sub pause_mysql  { $_[0]->_pause('mysql', $_[0]{mysql_pid}) }
sub resume_mysql { $_[0]->_resume('mysql', $_[0]{mysql_pid}) }
sub mysql_pid    { $_[0]{mysql_pid} }

# SIGSTOP takes effect thread by thread: a busy server may still answer a
# query or two after kill() returns. Wait until every thread is stopped.
sub _pause {
    my ($self, $what, $pid) = @_;
    croak "$what is not running" unless $pid && _alive($pid);
    kill 'STOP', $pid or croak "SIGSTOP $what: $!";
    $self->{paused}{$what} = 1;
    my $end = time + 5;
    while (time < $end) {
        my @states = map { (_slurp($_) =~ /^\d+ \(.*\) (\S)/s)[0] // 'T' }
                     glob("/proc/$pid/task/*/stat");
        return if !grep { $_ ne 'T' && $_ ne 't' } @states;
        sleep 0.01;
    }
    croak "$what did not stop within 5 s";
}

sub _resume {
    my ($self, $what, $pid) = @_;
    croak "$what is not running" unless $pid;
    kill 'CONT', $pid;
    delete $self->{paused}{$what};
}

# sql($text, %opt): runs SQL through the mariadb client, dies on error, and
# returns the rows as [[col, ...], ...] (values as the client prints them in
# batch mode, unescaped; NULL comes back as the string "NULL"; bytes, not
# decoded characters). Root over the socket by default; as_user => 1 runs it
# as bytemark over TCP. db => NAME (default portal; undef: none).
sub sql {
    my ($self, $sql, %o) = @_;
    croak 'mysql not started' unless $self->{mysql_pid};
    my $db = exists $o{db} ? $o{db} : $self->mysql_db;
    my @conn = $o{as_user}
        ? ('--protocol=TCP', '--host=127.0.0.1', "--port=$self->{mysql_port}",
           '--user=' . $self->mysql_user, '--password=' . $self->mysql_password)
        : ('--protocol=SOCKET', '--socket=' . $self->mysql_socket, '--user=root');
    my ($rc, $out, $err) = $self->_run([
        _which('mariadb') // 'mariadb', '--no-defaults', @conn,
        '--batch', '--skip-column-names', '--default-character-set=utf8mb4',
        '--connect-timeout=10', (defined $db ? ($db) : ()),
    ], stdin => $sql);
    croak "SQL failed ($rc): $err\nSQL: " . substr($sql, 0, 500) if $rc;
    my %esc = (t => "\t", n => "\n", '\\' => '\\', 0 => "\0");
    return [ map { [ map { s/\\([tn0\\])/$esc{$1}/gr } split /\t/, $_, -1 ] }
             split /\n/, $out ];
}

sub load_sample {
    my $self = shift;
    $self->sql(_slurp("$REPO/sql/sample.sql"));
}

# ---------------------------------------------------------------------------
# MongoDB

sub mongo_kind { $_[0]{mongo_kind} }

sub ferretdb_bin { $ENV{BYTEMARK_FERRETDB} || "$REPO/build/ferretdb/ferretdb" }
sub mongo_port { $_[0]{mongo_port} }
sub mongo_db   { $_[0]{mongo_db_name} }
sub mongo_coll { $_[0]{mongo_coll_name} }
sub mongo_pid  { $_[0]{mongo_pid} }
# FerretDB's TLS listener (new(mongo_tls => 1)); mongo_uri() stays plain
sub mongo_tls_port { $_[0]{mongo_tls_port} }

# False with an external server: it cannot be stopped or paused by a test.
sub mongo_controllable { ($_[0]{mongo_kind} // '') ne 'external' }

sub mongo_uri {
    my $self = shift;
    croak 'mongo not started (new(mongo => 1))' unless $self->{mongo_kind};
    return $self->{mongo_uri} // "mongodb://127.0.0.1:$self->{mongo_port}/";
}

sub start_mongo {
    my $self = shift;
    $self->_mongo_spawn;
    $self->_mongo_ready;
}

sub _mongo_spawn {
    my $self = shift;
    my $kind = $self->{mongo_kind} or croak 'mongo not configured (new(mongo => 1))';
    $self->{mongo_on} = 1;
    return if $kind eq 'external';
    croak 'mongo is already running' if $self->{mongo_pid} && _alive($self->{mongo_pid});
    my $dir = $self->{dir};
    $self->{mongo_port} //= free_port();
    unlink "$dir/mongo.log";
    if ($kind eq 'standin') {
        my $standin = "$REPO/tools/mongo_standin.py";
        die "MongoDB stand-in $standin is missing\n" unless -f $standin;
        $self->{mongo_pid} = $self->_spawn([
            $PYTHON, '-u', $standin, '--host', '127.0.0.1', '--port', $self->{mongo_port},
            '--pidfile', "$dir/mongo.pid",
        ], "$dir/mongo.log");
    } elsif ($kind eq 'ferretdb') {
        # FerretDB v1 on SQLite (tools/ferretdb): its own data directory, no
        # state file, no telemetry, no debug HTTP listener, so any number
        # of tests run side by side.
        my $bin = ferretdb_bin();
        die "FerretDB $bin is missing (bash scripts/deps.sh builds it)\n" unless -x $bin;
        make_path("$dir/ferretdb-data");
        my @tls;
        if (my $c = $self->{mongo_tls} && $self->{certs}) {
            $self->{mongo_tls_port} //= free_port();
            @tls = ('--listen-tls', "127.0.0.1:$self->{mongo_tls_port}",
                    '--listen-tls-cert-file', $c->{server_cert},
                    '--listen-tls-key-file', $c->{server_key},
                    ($self->{mongo_tls} eq 'client' ? ('--listen-tls-ca-file', $c->{ca}) : ()));
        }
        $self->{mongo_pid} = $self->_spawn([
            $bin, '--listen-addr', "127.0.0.1:$self->{mongo_port}",
            '--sqlite-url', "file:$dir/ferretdb-data/", '--log-level', 'warn', @tls,
        ], "$dir/mongo.log");
    } else {
        make_path("$dir/mongo-data");
        $self->{mongo_pid} = $self->_spawn([
            _which('mongod') // 'mongod', '--dbpath', "$dir/mongo-data",
            '--port', $self->{mongo_port}, '--bind_ip', '127.0.0.1',
            '--pidfilepath', "$dir/mongo.pid", '--nounixsocket',
            '--wiredTigerCacheSizeGB', '0.25',
            '--setParameter', 'diagnosticDataCollectionEnabled=false',
        ], "$dir/mongo.log");
    }
}

sub _mongo_ready {
    my $self = shift;
    if ($self->{mongo_kind} ne 'external') {
        my $pid = $self->{mongo_pid};
        my $end = time + 60;
        while (1) {
            if (!_alive($pid)) {
                $self->_forget_spawn(delete $self->{mongo_pid});
                die "$self->{mongo_kind} exited during startup:\n" . _tail(_slurp("$self->{dir}/mongo.log"), 30);
            }
            last if _connectable($self->{mongo_port})
                 && (!$self->{mongo_tls_port} || _connectable($self->{mongo_tls_port}));
            die "$self->{mongo_kind} did not listen in 60s:\n" . _tail(_slurp("$self->{dir}/mongo.log"), 30)
                if time > $end;
            sleep 0.03;
        }
    }
    # SPEC 3.1 step 3: operators (and so the tests) index user_id uniquely.
    $self->mongo_index_unique('user_id');
}

# stop_mongo(fast => 1) SIGKILLs; default SIGTERM (a clean shutdown).
sub stop_mongo {
    my ($self, %o) = @_;
    croak 'cannot stop an external MongoDB' if ($self->{mongo_kind} // '') eq 'external';
    my $pid = delete $self->{mongo_pid} or return;
    delete $self->{paused}{mongo};
    my $ok = _kill_tree($pid, $o{fast} ? 'KILL' : 'TERM', 30);
    $self->_forget_spawn($pid);
    warn "# $self->{mongo_kind} did not stop on SIGTERM, killed\n" unless $ok || $o{fast};
    unlink "$self->{dir}/mongo.pid";
    return $ok;
}

sub pause_mongo {
    my $self = shift;
    croak 'cannot pause an external MongoDB' if $self->{mongo_kind} eq 'external';
    $self->_pause('mongo', $self->{mongo_pid});
}

sub resume_mongo { $_[0]->_resume('mongo', $_[0]{mongo_pid}) }

sub _mongo_cli {
    my ($self, @args) = @_;
    croak 'mongo not started (new(mongo => 1))' unless $self->{mongo_kind};
    my %o = ref $args[-1] eq 'HASH' ? %{ pop @args } : ();
    my ($rc, $out, $err) = $self->_run([
        $PYTHON, "$REPO/tools/mongo_cli.py", $self->mongo_uri, $self->mongo_db,
        $self->mongo_coll, @args,
    ], %o);
    croak "mongo_cli $args[0] failed ($rc): $err" if $rc;
    return $out;
}

sub _ejson_arg {
    my $v = shift;
    return ref $v ? $JSON->encode($v) : $v;    # a string is taken as EJSON text
}

# Documents are Perl structures (or EJSON text); JSON::PP encodes them, so
# pass {'$numberLong' => "5"} & co. when a test needs a particular BSON type.
sub mongo_insert {
    my ($self, $docs) = @_;
    $self->_mongo_cli('insert', '-', { stdin => _ejson_arg($docs) });
    return;
}

# Returns the matching documents (sorted by _id) as decoded canonical EJSON:
# {"user_id": {"$numberInt": "12345"}, ...}. See plain() for plain values.
sub mongo_find {
    my ($self, $filter) = @_;
    my $out = $self->_mongo_cli('find', '-', { stdin => _ejson_arg($filter // {}) });
    return map { $JSON->decode($_) } grep { length } split /\n/, $out;
}

# The matching documents as the canonical EJSON text mongo_cli prints, one
# string each: members in their stored order, BSON types spelled out.
sub mongo_find_raw {
    my ($self, $filter) = @_;
    my $out = $self->_mongo_cli('find', '-', { stdin => _ejson_arg($filter // {}) });
    return grep { length } split /\n/, $out;
}

sub mongo_count {
    my ($self, $filter) = @_;
    my $out = $self->_mongo_cli('count', '-', { stdin => _ejson_arg($filter // {}) });
    return $out =~ /(\d+)/ ? $1 : croak "bad count output: $out";
}

# Returns the number of documents deleted.
sub mongo_delete {
    my ($self, $filter) = @_;
    my $out = $self->_mongo_cli('delete', '-', { stdin => _ejson_arg($filter // {}) });
    return $out =~ /(\d+)/ ? $1 : 0;
}

# mongo_update($filter, $update, upsert => 1): update_many; returns the count.
sub mongo_update {
    my ($self, $filter, $update, %o) = @_;
    my $out = $self->_mongo_cli('update', _ejson_arg($filter), _ejson_arg($update),
                                ($o{upsert} ? ('upsert') : ()));
    return $out =~ /(\d+)/ ? $1 : 0;
}

sub mongo_drop         { $_[0]->_mongo_cli('drop'); return }
sub mongo_index_unique { $_[0]->_mongo_cli('index-unique', $_[1]); return }

# Open client connections of the server. FerretDB's serverStatus has no
# "connections" section, so for it the kernel's table of TCP sockets is
# read instead: established sockets whose local port is the server's
# (mongo_cli's own connection is not among them, unlike serverStatus).
sub mongo_connections {
    my $self = shift;
    if (($self->{mongo_kind} // '') eq 'ferretdb') {
        my $port = sprintf '%04X', $self->{mongo_port};
        my $n = 0;
        for my $f ('/proc/net/tcp', '/proc/net/tcp6') {
            open my $fh, '<', $f or next;
            while (<$fh>) {
                my (undef, $local, undef, $st) = split ' ';
                $n++ if defined $st && $st eq '01' && $local =~ /:$port$/;
            }
        }
        return $n;
    }
    my $out = $self->_mongo_cli('server-status');
    return $out =~ /(-?\d+)/ ? $1 : croak "bad server-status output: $out";
}

# Find commands the server has run so far (serverStatus opcounters.query),
# or undef when it keeps no such count (FerretDB's serverStatus has none).
sub mongo_finds {
    my $self = shift;
    my $out = $self->_mongo_cli('op-count', 'query');
    my ($n) = $out =~ /(-?\d+)/ or croak "bad op-count output: $out";
    return $n < 0 ? undef : $n;
}

# Canonical EJSON -> plain Perl values ($numberInt/$numberLong/$numberDouble to
# numbers, $oid to its hex string); other wrappers are left as they are.
sub plain {
    my ($self, $v) = @_;
    if (ref $v eq 'ARRAY') {
        return [ map { $self->plain($_) } @$v ];
    }
    if (ref $v eq 'HASH') {
        if (keys %$v == 1) {
            my ($k) = keys %$v;
            return 0 + $v->{$k} if $k =~ /^\$number(Int|Long)$/;
            if ($k eq '$numberDouble') {
                return $v->{$k} =~ /^-?[0-9.eE+-]+$/ ? 0 + $v->{$k} : $v->{$k};
            }
            return $v->{$k} if $k eq '$oid';
        }
        return { map { $_ => $self->plain($v->{$_}) } keys %$v };
    }
    return $v;
}

# ---------------------------------------------------------------------------
# nginx

sub nginx_port { $_[0]{nginx_port} }
sub nginx_pid  { $_[0]{nginx_pid} }

# A second free port for tests that need one (%%PORT2%%).
sub port2 {
    my $self = shift;
    return $self->{port2} //= free_port();
}

sub nginx_bin { $ENV{BYTEMARK_NGINX} || '/usr/sbin/nginx' }

sub module_path { $ENV{BYTEMARK_MODULE} || "$REPO/build/ngx_http_bytemark_module.so" }

# BYTEMARK_MODULE=static: the module is compiled into nginx (--add-module),
# so there is nothing to load (scripts/matrix.sh's static row)
sub module_static { ($ENV{BYTEMARK_MODULE} // '') eq 'static' }

# The full nginx.conf around a test's http{} body. Placeholders (in the body
# and in %opt main): %%PORT%% %%PORT2%% %%DIR%% %%MONGO_URI%% %%MONGO_COLL%%
# (db.coll) %%MYSQL%% (mysql_directive()) %%MYSQL_PORT%% %%MYSQL_SOCKET%%.
# %opt: workers => N, main => "main-context lines", thread_pool =>
# "threads=4 max_queue=65536" (parameters of the default pool) or
# "name threads=..." (an extra pool; an arrayref for several), or "none" (no
# thread_pool line at all: an nginx without threads has no such directive, and
# nginx then creates only the pools a module asks for), no_module => 1,
# error_log_level => 'debug' (default info), events => "lines in events{}".
sub nginx_conf {
    my ($self, $body, %o) = @_;
    my $dir = $self->{dir};
    my $workers = $o{workers} // 1;
    my $level = $o{error_log_level} // 'info';

    my $default_pool = 'threads=4 max_queue=65536';
    my @pools;
    for my $tp (ref $o{thread_pool} ? @{ $o{thread_pool} } : grep { defined } $o{thread_pool}) {
        if ($tp eq 'none')            { $default_pool = undef }
        elsif ($tp =~ /^\s*threads=/) { $default_pool = $tp }
        else                          { push @pools, $tp }
    }

    my $conf = '';
    $conf .= "load_module " . $self->module_path . ";\n" unless $o{no_module} || module_static();
    # Debian's nginx has no --user: without this the workers would run as
    # nobody and could not use the (0700) temp dir.
    $conf .= "user root;\n" if $> == 0;
    $conf .= <<"EOF";
daemon on;
master_process on;
worker_processes $workers;
pid $dir/nginx.pid;
lock_file $dir/nginx.lock;
error_log $dir/error.log $level;
EOF
    $conf .= "thread_pool default $default_pool;\n" if defined $default_pool;
    $conf .= "thread_pool $_;\n" for @pools;
    $conf .= "$o{main}\n" if defined $o{main};
    $conf .= "events {\n    worker_connections 1024;\n" . ($o{events} // '') . "}\n";
    $conf .= <<"EOF";
http {
    access_log $dir/access.log;
    client_body_temp_path $dir/client_body_temp;
    proxy_temp_path $dir/proxy_temp;
    fastcgi_temp_path $dir/fastcgi_temp;
    uwsgi_temp_path $dir/uwsgi_temp;
    scgi_temp_path $dir/scgi_temp;

$body
}
EOF
    return $self->_subst($conf);
}

sub _subst {
    my ($self, $text) = @_;
    my %val = (
        PORT         => sub { $self->{nginx_port} },
        PORT2        => sub { $self->port2 },
        DIR          => sub { $self->{dir} },
        MONGO_URI    => sub { $self->mongo_uri },
        MONGO_COLL   => sub { $self->mongo_db . '.' . $self->mongo_coll },
        MYSQL        => sub { $self->mysql_directive },
        MYSQL_PORT   => sub { $self->{mysql_port} // croak 'mysql not started' },
        MYSQL_SOCKET => sub { $self->mysql_socket },
    );
    $text =~ s{%%([A-Z0-9_]+)%%}{
        my $f = $val{$1} or croak "unknown placeholder %%$1%% in nginx config";
        $f->();
    }ge;
    return $text;
}

# ($exit_code, $output) of `nginx -t` on that configuration.
sub nginx_test {
    my ($self, $body, %o) = @_;
    my $file = "$self->{dir}/nginx-test.conf";
    _spew($file, $self->nginx_conf($body, %o));
    my ($rc, $out, $err) = $self->_run([$self->nginx_bin, '-t', '-p', "$self->{dir}/", '-c', $file]);
    return ($rc, $out . $err);
}

sub start_nginx {
    my ($self, $body, %o) = @_;
    croak 'nginx is already running' if $self->{nginx_pid} && _alive($self->{nginx_pid});
    my $dir = $self->{dir};
    my $conf = $self->nginx_conf($body, %o);
    _spew("$dir/nginx.conf", $conf);
    $self->{nginx_body} = $body;
    $self->{nginx_opt}  = \%o;
    unlink "$dir/nginx.pid";

    my ($rc, $out, $err) = $self->_run([$self->nginx_bin, '-p', "$dir/", '-c', "$dir/nginx.conf"]);
    die "nginx failed to start ($rc):\n$out$err" . _tail($self->error_log, 30) if $rc;

    # The master has bound the port before the starting process exits; wait
    # for the pid file and for all the workers (they may fail in init_process).
    my $pid = $self->wait_for(sub { _read_pid("$dir/nginx.pid") }, 10, 'nginx pid file');
    $self->{nginx_pid} = $pid;
    my $want = $o{workers} // 1;
    my $port = $conf =~ /:\Q$self->{nginx_port}\E\b/ ? $self->{nginx_port} : undef;
    my $end = time + 15;
    until ((!$port || _connectable($port)) && $self->worker_pids >= $want) {
        if (!_alive($pid) || time > $end) {
            my $why = _alive($pid) ? "only " . scalar($self->worker_pids) . " of $want workers up"
                                   : 'nginx master exited';
            die "nginx did not come up ($why):\n" . _tail($self->error_log, 40);
        }
        sleep 0.02;
    }
    return $pid;
}

# Worker processes of the running master (not those shutting down).
sub worker_pids {
    my $self = shift;
    my $m = $self->{nginx_pid} or return;
    return grep {
        my $c = _slurp("/proc/$_/cmdline");
        $c =~ /worker process/ && $c !~ /shutting down/;
    } _children($m);
}

# reload_nginx([$new_body, %opt]): SIGHUP; with a body, rewrites the conf
# first (checked with nginx -t; %opt defaults to the running one's). Waits
# until a full set of new workers runs and no old one accepts any more (old
# ones may still be finishing requests). Returns the new worker pids.
sub reload_nginx {
    my ($self, $body, %o) = @_;
    my $pid = $self->{nginx_pid} or croak 'nginx is not running';
    my $dir = $self->{dir};
    if (defined $body) {
        %o = %{ $self->{nginx_opt} } unless %o;
        my ($rc, $out) = $self->nginx_test($body, %o);
        die "new nginx configuration is invalid:\n$out" if $rc;
        _spew("$dir/nginx.conf", $self->nginx_conf($body, %o));
        $self->{nginx_body} = $body;
        $self->{nginx_opt}  = \%o;
    }
    my %old = map { $_ => 1 } $self->worker_pids;
    my $want = $self->{nginx_opt}{workers} // 1;
    kill 'HUP', $pid or croak "SIGHUP nginx: $!";
    # Done when the new workers run and every old one has closed its
    # listening sockets (it then calls itself "shutting down").
    $self->wait_for(sub {
        my @w = $self->worker_pids;
        !(grep { $old{$_} } @w) && @w >= $want;
    }, 15, "new nginx workers after reload\n" . _tail($self->error_log, 20));
    return grep { !$old{$_} } $self->worker_pids;
}

# stop_nginx(graceful => 1) sends SIGQUIT instead of SIGTERM. Waits for the
# master and its workers; returns 1 on a clean stop, 0 if it had to SIGKILL.
sub stop_nginx {
    my ($self, %o) = @_;
    my $pid = delete $self->{nginx_pid} or return 1;
    my $ok = _kill_tree($pid, $o{graceful} ? 'QUIT' : 'TERM', $o{timeout} // 20);
    unlink "$self->{dir}/nginx.pid";    # gone already unless it had to be killed
    Test::More::diag("nginx did not stop in time; killed it") unless $ok;
    return $ok;
}

sub error_log  { _slurp("$_[0]{dir}/error.log") }
sub access_log { _slurp("$_[0]{dir}/access.log") }

# ---------------------------------------------------------------------------
# HTTP client

sub url { "http://127.0.0.1:$_[0]{nginx_port}$_[1]" }

# HTTP::Tiny response hashref ({status, reason, headers (lower-case names),
# content}); a new connection per request; status 599 on connection errors.
sub http {
    my ($self, $method, $path, $headers, $body, %o) = @_;
    my $ua = HTTP::Tiny->new(timeout => $o{timeout} // 30, keep_alive => 0,
                             max_redirect => 0, agent => 'bytemark-test/1');
    my %req;
    $req{headers} = $headers if $headers;
    if (defined $body) {
        $body = $JSON->encode($body) if ref $body;
        $req{content} = $body;
    }
    return $ua->request($method, $self->url($path), \%req);
}

sub get { my ($self, $path, $headers) = @_; $self->http('GET', $path, $headers) }

# Decoded JSON body of a response (dies if it is not JSON).
sub json {
    my ($self, $res) = @_;
    return $JSON->decode($res->{content});
}

1;
