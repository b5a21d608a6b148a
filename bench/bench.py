#!/usr/bin/python3
"""The benchmark of issue 6: bash bench/run.sh [--quick] (which builds first and
then runs this with /usr/bin/python3, Debian's, for pymongo).

Starts its own MariaDB, MongoDB stand-in (tools/mongo_standin.py), FerretDB
(build/ferretdb/ferretdb, built by scripts/deps.sh: a real MongoDB-wire server,
on SQLite) and three nginx instances in a private directory, loads a data set
(MySQL, with a binary log for the replica of bench/replica_reads.py: LOAD DATA
LOCAL INFILE of a generated file; MongoDB: pymongo
insert_many, into FerretDB only the first --ferretdb-docs documents), runs wrk
against every scenario in one run, profiles with callgrind, and writes
bench/results/<date>-<host>[-quick].md (and .json, and the gzipped callgrind
profiles in bench/results/callgrind/). Everything it starts is stopped again,
whatever happens; the pids are also listed in <workdir>/pids for run.sh's trap.

Scenarios (wrk -t1 -c32, bench/random_ids.lua: random user ids over a range):
  ceiling     nginx `return 200` with a body of the average answer's size
  microcache  bytemark_microcache hits on a hot set ("not available" when the
              build does not know the directive)
  mc-expiry   (issue 16) the same hot set at ttl=5s, filled at once so that it
              expires at once, 15 s (12 s --quick) a round, in 2 rounds
              alternating with the ceiling and the hot set at ttl=10m, at the
              same connection count: p99 against the ceiling's, goal <= 2x
  mongo       MongoDB hits (users that have a cache entry)
  mysql       MySQL answers, MongoDB absent from the configuration (nginx B)
  fallback    MySQL after a MongoDB miss, bytemark_cache_fill off
  ferretdb_mongo, ferretdb_fallback
              the same two against FerretDB (nginx C: nginx A's configuration
              with FerretDB as its MongoDB, as bytemark_mongo_uri is http-level)
FerretDB 1.24 pushes down to SQLite only a filter on _id, so a lookup by user_id
decodes the collection's documents until it finds the user (a miss: all of
them), 0.65 to 0.9 ms of FerretDB CPU per document here: its collection is kept
small (--ferretdb-docs, 10) so that its lookups at -c32 stay within the
module's 1 s MongoDB timeout (20 documents did not, on a busy machine), in
--quick and in the full run alike.
The ceiling and the micro-cache alternate in rounds; each lookup but FerretDB's
is also run over 1 000 users, loaded and one request at a time (latency against
data set size). Per run: req/s, latency percentiles, CPU of the nginx
worker(s), of MariaDB, of the stand-in and of FerretDB (utime+stime from
/proc), where the answers came from (the status page), and the CPU other
processes took meanwhile.

Before each run the bench waits (within --quiet-wait) for other processes to
leave the machine alone, and until no backend call is in flight and every
circuit breaker is closed (see drain()). Everything runs at --nice (-10 as
root). --render JSON rewrites the .md of an earlier run from its .json.
"""

import argparse
import base64
import datetime
import gzip
import hashlib
import http.client
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import mysql_batch          # bench/mysql_batch.py: issue 27's side-by-side section
import replica_reads        # bench/replica_reads.py: issue 26's primary against spread reads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = '/usr/bin/python3'
FERRETDB = os.path.join(ROOT, 'build', 'ferretdb', 'ferretdb')
CLK_TCK = os.sysconf('SC_CLK_TCK')

MYSQL_USER, MYSQL_PW, MYSQL_DB = 'bytemark', 'bench-pw', 'portal'
MONGO_DB, MONGO_COLL = 'cache', 'bytemark_tickets_cache'

T0 = time.time()


def replica_env():
    """What bench/replica_reads.py uses of this file."""
    return {'run': run, 'log': log, 'cpu_seconds': cpu_seconds,
            'db': MYSQL_DB, 'user': MYSQL_USER, 'pw': MYSQL_PW}


def log(msg):
    print('[bench %6.1fs] %s' % (time.time() - T0, msg), flush=True)


# --------------------------------------------------------------------------- processes

class Procs:
    """Every process started here; stop_all() is idempotent and runs on any exit."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.items = []          # (name, Popen, stop signal)
        self.stopped = False

    def _record(self):
        with open(os.path.join(self.workdir, 'pids'), 'w') as f:
            for name, p, _ in self.items:
                if p.poll() is None:
                    f.write('%d %s\n' % (p.pid, name))

    def spawn(self, name, cmd, log_file, stop_sig=signal.SIGTERM, **kw):
        out = open(log_file, 'ab')
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True, **kw)
        out.close()
        self.items.append((name, p, stop_sig))
        self._record()
        return p

    def stop(self, p, timeout=15):
        for i, (name, q, sig) in enumerate(self.items):
            if q is p:
                break
        else:
            return
        if p.poll() is None:
            kids = children_of(p.pid)
            try:
                os.kill(p.pid, signal.SIGCONT)
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                for pid in [p.pid] + kids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                p.wait(10)
            # nginx workers, should the master have died before them
            for pid in kids:
                if pid_alive(pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        self.items.pop(i)
        self._record()

    def stop_all(self):
        if self.stopped:
            return
        self.stopped = True
        for _, p, _ in reversed(list(self.items)):
            try:
                self.stop(p)
            except Exception as e:      # keep going: stop the others
                print('bench: stopping pid %d: %s' % (p.pid, e), file=sys.stderr)


def children_of(ppid):
    kids = []
    for d in os.listdir('/proc'):
        if d.isdigit():
            try:
                with open('/proc/%s/stat' % d) as f:
                    s = f.read()
            except OSError:
                continue
            if int(s[s.rindex(')') + 2:].split()[1]) == ppid:
                kids.append(int(d))
    return kids


def pid_alive(pid):
    try:
        with open('/proc/%d/stat' % pid) as f:
            s = f.read()
    except OSError:
        return False
    return s[s.rindex(')') + 2] != 'Z'


def cpu_seconds(pid):
    """utime + stime of a process, all its threads included (/proc/PID/stat)."""
    with open('/proc/%d/stat' % pid) as f:
        s = f.read()
    fields = s[s.rindex(')') + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_split(pid):
    """(utime, stime) of a process in seconds."""
    with open('/proc/%d/stat' % pid) as f:
        s = f.read()
    fields = s[s.rindex(')') + 2:].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def rss_mb(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
    return 0.0


def machine_cpu():
    """Jiffies of the whole machine: (tasks (user+nice+system), irq+softirq, steal, total)."""
    with open('/proc/stat') as f:
        v = [int(x) for x in f.readline().split()[1:]] + [0] * 10
    return v[0] + v[1] + v[2], v[5] + v[6], v[7], sum(v[:8])


def all_cpu():
    """{pid: (name, cpu seconds)} of every process on the machine."""
    out = {}
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % d) as f:
                s = f.read()
        except OSError:
            continue
        i = s.rindex(')')
        fields = s[i + 2:].split()
        out[int(d)] = (s[s.index('(') + 1:i], (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return out


def self_and_children_cpu():
    a = resource.getrusage(resource.RUSAGE_SELF)
    b = resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc, what, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError('%s exited during startup (status %s)' % (what, proc.returncode))
        try:
            socket.create_connection(('127.0.0.1', port), 1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError('%s did not listen on %d within %ds' % (what, port, timeout))


def run(cmd, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    if r.returncode:
        raise RuntimeError('%s failed (%d): %s' % (' '.join(cmd[:3]), r.returncode,
                                                 r.stderr.decode(errors='replace')[-2000:]))
    return r.stdout.decode(errors='replace')


def tail(path, n=30):
    try:
        with open(path, errors='replace') as f:
            return ''.join(f.readlines()[-n:])
    except OSError:
        return ''


# --------------------------------------------------------------------------- data

PRODUCTS = [('Monthly Pass', 9800, 30), ('7-Day Pass', 3300, 7), ('Day Pass', 700, 1),
            ('Single Ride', 275, 1), ('10-Ride Pack', 2500, 60), ('Reduced Fare Monthly', 4900, 30)]
STATUSES = ['active'] * 6 + ['expired'] * 3 + ['used', 'refunded']
RIDERS = ['adult', 'adult', 'adult', 'senior', 'youth', 'reduced']
AGENCIES = ['NYCT', 'LIRR', 'MNR', 'NJT', 'PATH']
PASS_COUNTS = (2, 3, 3, 4, 4, 5)          # passes per user, 3.5 on average
DAY_MS = 86400 * 1000


def gen_user(uid, now_ms):
    """The passes of one user, deterministic in uid: [(version, pass dict, payload text)]."""
    rng = random.Random(uid * 1000003 + 11)
    out = []
    for _ in range(rng.choice(PASS_COUNTS)):
        name, cents, days = rng.choice(PRODUCTS)
        start = now_ms - rng.randrange(0, 90 * DAY_MS)
        start -= start % 1000
        payload = {
            'agency': rng.choice(AGENCIES),
            'barcode': base64.b64encode(rng.getrandbits(576).to_bytes(72, 'little')).decode(),
            'device_id': '%016x' % rng.getrandbits(64),
            'fare': {'amount': cents, 'currency': 'USD'},
            'product': name,
            'product_id': rng.randrange(1000, 10000),
            'rider': rng.choice(RIDERS),
            'uses': rng.randrange(0, 60),
            'valid_from': datetime.datetime.utcfromtimestamp(start / 1000).strftime('%Y-%m-%dT%H:%M:%SZ'),
            'valid_until': datetime.datetime.utcfromtimestamp(start / 1000 + days * 86400)
                                   .strftime('%Y-%m-%dT%H:%M:%SZ'),
            'zones': sorted(rng.sample(['1', '2', '3', '4', '5', '6'], rng.randrange(1, 4))),
        }
        text = json.dumps(payload, sort_keys=True, separators=(',', ':'))
        h = '%032x' % rng.getrandbits(128)
        uuid = '%s-%s-4%s-%x%s-%s' % (h[0:8], h[8:12], h[13:16], 8 | (int(h[16], 16) & 3), h[17:20], h[20:32])
        out.append((4 if rng.random() < 0.25 else 3, {
            'pass_uuid': uuid,
            'timestamp': start + rng.randrange(0, 1000),
            'status': rng.choice(STATUSES),
            'free_ticket_status': rng.choice((0, 0, 0, 1)),
            'payload': payload,
            'payload_hash': hashlib.sha256(text.encode()).hexdigest(),
        }, text))
    return out


def mongo_doc(uid, passes, now_ms):
    from bson.int64 import Int64
    docs = {3: [], 4: []}
    logs = {3: [], 4: []}
    for version, p, _ in sorted(passes, key=lambda x: x[1]['timestamp']):
        d = dict(p)
        d['timestamp'] = Int64(p['timestamp'])
        docs[version].append(d)
        logs[version].append({
            'server_time': datetime.datetime.utcfromtimestamp(p['timestamp'] / 1000)
                                   .strftime('%Y-%m-%dT%H:%M:%S.000Z'),
            'data': {'op': 'upsert', 'pass_uuid': p['pass_uuid'], 'status': p['status']}})
    return {'user_id': Int64(uid), 'timestamp': Int64(now_ms), 'passes': docs[3], 'passes4': docs[4],
            'passesLog': logs[3], 'passes4Log': logs[4]}


def generate(path, rows_target, mongo_users, now_ms, seed=1):
    """Writes the MySQL rows (TSV, in random order, as rows of many users interleave
    over time in a real table) and returns (mysql users, rows, mongo docs)."""
    lines, docs = [], []
    uid = 0
    while len(lines) < rows_target:
        uid += 1
        passes = gen_user(uid, now_ms)
        passes = passes[:rows_target - len(lines)]
        for version, p, text in passes:
            lines.append('%d\t%s\t%d\t%s\t%d\t%s\t%s\t%d\n' % (
                uid, p['pass_uuid'], version, p['status'], p['free_ticket_status'], text,
                p['payload_hash'], p['timestamp']))
        if uid <= mongo_users:
            docs.append(mongo_doc(uid, passes, now_ms))
    random.Random(seed).shuffle(lines)
    with open(path, 'w') as f:
        f.writelines(lines)
    return uid, len(lines), docs


# --------------------------------------------------------------------------- the bench

class Bench:

    def __init__(self, a):
        self.a = a
        self.quick = a.quick
        self.workdir = a.workdir or tempfile.mkdtemp(prefix='bytemark-bench.')
        os.makedirs(self.workdir, exist_ok=True)
        self.procs = Procs(self.workdir)
        self.module = a.module or os.path.join(ROOT, 'build', 'ngx_http_bytemark_module.so')
        self.nginx_bin = a.nginx
        self.res = {'scenarios': {}, 'index': {}, 'load': {}, 'notes': [], 'config': {}}
        if self.quick:
            self.rows, self.mongo_users = a.rows or 20000, a.mongo_users or 2000
            self.duration, self.warmup, self.c1_duration = a.duration or 4, a.warmup or 1, 2
        else:
            self.rows, self.mongo_users = a.rows or 1000000, a.mongo_users or 100000
            self.duration, self.warmup, self.c1_duration = a.duration or 20, a.warmup or 3, 5
        self.hot = min(1000, self.mongo_users)
        self.quiet_budget = a.quiet_wait if a.quiet_wait is not None else (15 if self.quick else 60)
        self.quiet_warned = False
        self.small = min(1000, self.mongo_users)
        # not more: FerretDB scans its collection on every lookup (see the docstring)
        self.ferret_docs = min(a.ferretdb_docs, self.mongo_users)
        self.ferret = None
        self.nginx_dirs = {}

    # ---- MariaDB

    def start_mysql(self):
        d = self.workdir
        data, tmp = os.path.join(d, 'mysql-data'), os.path.join(d, 'mysql-tmp')
        os.makedirs(tmp, exist_ok=True)
        self.mysql_port = free_port()
        self.mysql_sock = os.path.join(d, 'mysql.sock')
        bp = '256M' if self.quick else '1536M'
        opts = ['--datadir=' + data, '--tmpdir=' + tmp, '--innodb-buffer-pool-size=' + bp,
                '--innodb-log-file-size=' + ('64M' if self.quick else '512M'),
                # mariadb-install-db's bootstrap; the server logs (PRIMARY_OPTS, below)
                '--skip-log-bin', '--skip-name-resolve',
                '--character-set-server=utf8mb4', '--collation-server=utf8mb4_general_ci']
        if os.geteuid() == 0:
            opts.append('--user=root')
        t = time.time()
        run(['mariadb-install-db', '--no-defaults'] + opts +
            ['--auth-root-authentication-method=normal', '--skip-test-db'])
        self.mysqld = self.procs.spawn('mariadbd', [
            '/usr/sbin/mariadbd', '--no-defaults'] + opts + [
            '--socket=' + self.mysql_sock, '--port=%d' % self.mysql_port,
            '--bind-address=127.0.0.1', '--pid-file=' + os.path.join(d, 'mariadbd.pid'),
            '--log-error=' + os.path.join(d, 'mariadb.err'),
            '--innodb-flush-log-at-trx-commit=2', '--innodb-doublewrite=0',
            '--innodb-log-buffer-size=64M',
            '--innodb-buffer-pool-dump-at-shutdown=0', '--innodb-buffer-pool-load-at-startup=0',
            '--performance-schema=OFF', '--max-connections=500', '--local-infile=1',
        ] + replica_reads.PRIMARY_OPTS, os.path.join(d, 'mariadb.out'),
            stop_sig=signal.SIGKILL)  # data is thrown away
        end = time.time() + 60
        while True:
            if self.mysqld.poll() is not None:
                raise RuntimeError('mariadbd exited:\n' + tail(os.path.join(d, 'mariadb.err')))
            if os.path.exists(self.mysql_sock):
                try:
                    s = socket.socket(socket.AF_UNIX)
                    s.connect(self.mysql_sock)
                    s.close()
                    break
                except OSError:
                    pass
            if time.time() > end:
                raise RuntimeError('mariadbd not ready:\n' + tail(os.path.join(d, 'mariadb.err')))
            time.sleep(0.05)
        self.sql("""CREATE DATABASE %(db)s CHARACTER SET utf8mb4;
CREATE USER '%(u)s'@'127.0.0.1' IDENTIFIED BY '%(pw)s';
CREATE USER '%(u)s'@'localhost' IDENTIFIED BY '%(pw)s';
GRANT ALL PRIVILEGES ON %(db)s.* TO '%(u)s'@'127.0.0.1';
GRANT ALL PRIVILEGES ON %(db)s.* TO '%(u)s'@'localhost';""" % {'db': MYSQL_DB, 'u': MYSQL_USER, 'pw': MYSQL_PW},
                 db=None)
        with open(os.path.join(ROOT, 'sql', 'schema.sql')) as f:
            self.sql(f.read())
        log('MariaDB up on port %d (buffer pool %s, binary log on) in %.1fs'
            % (self.mysql_port, bp, time.time() - t))

    def sql(self, text, db=MYSQL_DB, local_infile=False):
        cmd = ['mariadb', '--no-defaults', '--protocol=SOCKET', '--socket=' + self.mysql_sock,
               '--user=root', '--batch', '--skip-column-names', '--default-character-set=utf8mb4']
        if local_infile:
            cmd.append('--local-infile=1')
        if db:
            cmd.append(db)
        return run(cmd, input=text.encode())

    # ---- MongoDB stand-in

    def start_mongo(self):
        d = self.workdir
        self.mongo_port = free_port()
        self.mongo = self.procs.spawn('mongo-standin', [
            PYTHON, os.path.join(ROOT, 'tools', 'mongo_standin.py'), '--host', '127.0.0.1',
            '--port', str(self.mongo_port), '--pidfile', os.path.join(d, 'mongo.pid')],
            os.path.join(d, 'mongo.log'))
        wait_port(self.mongo_port, self.mongo, 'mongo stand-in')
        import pymongo
        self.mongo_client = pymongo.MongoClient('127.0.0.1', self.mongo_port)
        coll = self.mongo_client[MONGO_DB][MONGO_COLL]
        coll.create_index([('user_id', 1)], unique=True)
        log('MongoDB stand-in up on port %d (RSS %.0f MB), unique index on user_id'
            % (self.mongo_port, rss_mb(self.mongo.pid)))

    # ---- FerretDB

    def start_ferretdb(self):
        """FerretDB on SQLite, fresh data; self.ferret stays None when it is not built."""
        if not os.access(self.a.ferretdb, os.X_OK):
            self.ferret_why = '%s is missing (scripts/deps.sh builds it)' % os.path.relpath(self.a.ferretdb, ROOT)
            log('FerretDB not run: ' + self.ferret_why)
            return
        d = os.path.join(self.workdir, 'ferretdb-data')
        os.makedirs(d, exist_ok=True)
        self.ferret_port = free_port()
        t = time.time()
        self.ferret = self.procs.spawn('ferretdb', [
            self.a.ferretdb, '--listen-addr', '127.0.0.1:%d' % self.ferret_port,
            '--sqlite-url', 'file:%s/' % d, '--log-level', 'warn'],
            os.path.join(self.workdir, 'ferretdb.log'))
        wait_port(self.ferret_port, self.ferret, 'FerretDB')
        import pymongo
        self.ferret_client = pymongo.MongoClient('127.0.0.1', self.ferret_port)
        # as for the stand-in; FerretDB builds it in SQLite but does not use it (see load())
        self.ferret_client[MONGO_DB][MONGO_COLL].create_index([('user_id', 1)], unique=True)
        log('FerretDB up on port %d in %.1fs (RSS %.0f MB), unique index on user_id'
            % (self.ferret_port, time.time() - t, rss_mb(self.ferret.pid)))

    # ---- data set

    def load(self):
        now_ms = int(time.time() * 1000)
        self.now_ms = now_ms
        path = os.path.join(self.workdir, 'bytemark_pass.tsv')
        t = time.time()
        users, rows, docs = generate(path, self.rows, self.mongo_users, now_ms)
        self.mysql_users = users
        gen_s = time.time() - t
        log('generated %d rows for %d users (%.0f MB) and %d cache documents in %.1fs'
            % (rows, users, os.path.getsize(path) / 1e6, len(docs), gen_s))

        # MySQL in a thread (the mariadb client waits on the server), MongoDB here:
        # the two servers load in parallel.
        mysql_out = {}

        def mysql_load():
            t1 = time.time()
            try:
                self.sql("SET SESSION unique_checks=0; SET SESSION foreign_key_checks=0;\n"
                         "LOAD DATA LOCAL INFILE '%s' INTO TABLE bytemark_pass "
                         "FIELDS TERMINATED BY '\\t' ESCAPED BY '' LINES TERMINATED BY '\\n' "
                         "(user_id, pass_uuid, version, status, free_ticket_status, payload, "
                         "payload_hash, timestamp);\nANALYZE TABLE bytemark_pass;" % path,
                         local_infile=True)
                mysql_out['seconds'] = time.time() - t1
            except Exception as e:
                mysql_out['error'] = e

        th = threading.Thread(target=mysql_load)
        th.start()
        coll = self.mongo_client[MONGO_DB][MONGO_COLL]
        rss0 = rss_mb(self.mongo.pid)
        t1 = time.time()
        batch = 1000
        for i in range(0, len(docs), batch):
            coll.insert_many(docs[i:i + batch], ordered=False)
        mongo_s = time.time() - t1
        count = coll.estimated_document_count()
        rss1 = rss_mb(self.mongo.pid)
        docs_bytes = 0
        import bson
        for dd in docs[:1000]:
            docs_bytes += len(bson.encode(dd))
        log('MongoDB: %d documents inserted in %.1fs (%.0f docs/s); stand-in RSS %.0f -> %.0f MB'
            % (count, mongo_s, count / mongo_s, rss0, rss1))
        ferret_load = self.load_ferretdb(docs[:self.ferret_docs]) if self.ferret else {}
        del docs
        th.join()
        if 'error' in mysql_out:
            raise mysql_out['error']
        nrows = int(self.sql('SELECT COUNT(*) FROM bytemark_pass').strip())
        size = self.sql("SELECT data_length, index_length FROM information_schema.tables "
                        "WHERE table_schema='%s' AND table_name='bytemark_pass'" % MYSQL_DB).split()
        log('MySQL: %d rows loaded in %.1fs (%.0f rows/s), data %.0f MB, indexes %.0f MB'
            % (nrows, mysql_out['seconds'], nrows / mysql_out['seconds'],
               int(size[0]) / 2**20, int(size[1]) / 2**20))
        explain = self.sql("EXPLAIN SELECT pass_uuid, version, status, free_ticket_status, payload, "
                           "payload_hash, timestamp FROM bytemark_pass WHERE user_id = %d "
                           "ORDER BY timestamp, id" % (users // 2))
        os.unlink(path)
        self.res['load'] = {
            'generate_s': gen_s, 'mysql_rows': nrows, 'mysql_users': users,
            'mysql_load_s': mysql_out['seconds'], 'mysql_data_mb': int(size[0]) / 2**20,
            'mysql_index_mb': int(size[1]) / 2**20,
            'mongo_docs': count, 'mongo_insert_s': mongo_s, 'mongo_rss_before_mb': rss0,
            'mongo_rss_after_mb': rss1, 'mongo_avg_doc_bytes': docs_bytes / max(1, min(1000, count)),
            'explain': explain.strip(),
            'total_s': time.time() - t,
        }
        self.res['load'].update(ferret_load)

    def load_ferretdb(self, docs):
        """The first cache documents, the same as the stand-in's, and the plan of a lookup."""
        coll = self.ferret_client[MONGO_DB][MONGO_COLL]
        t = time.time()
        for i in range(0, len(docs), 1000):
            coll.insert_many(docs[i:i + 1000], ordered=False)
        secs = time.time() - t
        count = coll.estimated_document_count()
        # the module looks users up by user_id: whether FerretDB hands that filter to SQLite
        try:
            ex = self.ferret_client[MONGO_DB].command('explain', {'find': MONGO_COLL, 'filter': {'user_id': 1},
                                                                  'limit': 1})
            plan = '; '.join(str(x) for x in ex.get('queryPlanner', {}).get('Plan', []))
            pushdown = ex.get('filterPushdown')
        except Exception as e:
            plan, pushdown = 'explain failed: %s' % e, None
        log('FerretDB: %d documents (users 1..%d) inserted in %.2fs; RSS %.0f MB; plan of a lookup: %s, '
            'filterPushdown %s' % (count, len(docs), secs, rss_mb(self.ferret.pid), plan, pushdown))
        return {'ferretdb_docs': count, 'ferretdb_insert_s': secs, 'ferretdb_plan': plan,
                'ferretdb_pushdown': pushdown}

    # ---- nginx

    def mysql_directive(self, pool=16):
        return ('host=127.0.0.1 port=%d user=%s password=%s database=%s pool_size=%d'
                % (self.mysql_port, MYSQL_USER, MYSQL_PW, MYSQL_DB, pool))

    def nginx_conf(self, name, port, http_body, single=False, module=None):
        d = os.path.join(self.workdir, name)
        os.makedirs(d, exist_ok=True)
        conf = 'load_module %s;\n' % (module or self.module)
        if os.geteuid() == 0:
            conf += 'user root;\n'
        conf += '''daemon off;
master_process %s;
worker_processes %d;
worker_rlimit_nofile 16384;
pid %s/nginx.pid;
lock_file %s/nginx.lock;
error_log %s/error.log notice;
thread_pool bench threads=%d max_queue=65536;
events {
    worker_connections 4096;
}
http {
    access_log off;
    default_type application/json;
    keepalive_requests 100000;
    keepalive_timeout 60s;
    client_body_temp_path %s/client_body_temp;
    proxy_temp_path %s/proxy_temp;
    fastcgi_temp_path %s/fastcgi_temp;
    uwsgi_temp_path %s/uwsgi_temp;
    scgi_temp_path %s/scgi_temp;
    bytemark_thread_pool bench;

%s
}
''' % ('off' if single else 'on', 1 if single else self.a.workers, d, d, d, self.a.pool_threads,
       d, d, d, d, d, http_body)
        path = os.path.join(d, 'nginx.conf')
        with open(path, 'w') as f:
            f.write(conf)
        return path

    def conf_a(self, port, mc, static_body):
        """nginx A: MongoDB and MySQL; the ceiling, micro-cache, MongoDB, fallback."""
        esc = static_body.replace('\\', '\\\\').replace("'", "\\'")
        mc_loc = ''
        if mc:
            mc_loc = '''
        location = /mc/tickets {
            bytemark_user_id $arg_user_id;
            bytemark_microcache zone=bench_mc:32m ttl=10m;
            add_header X-Cache-Status $bytemark_cache_status always;
            bytemark_tickets;
        }

        # issue 16: the hot set expiring every 5 s, refreshed while it is served
        location = /mc5/tickets {
            bytemark_user_id $arg_user_id;
            bytemark_microcache zone=bench_mc5:32m ttl=5s;
            add_header X-Cache-Status $bytemark_cache_status always;
            bytemark_tickets;
        }
'''
        return '''    bytemark_mongo_uri "mongodb://127.0.0.1:%d/";
    bytemark_mongo_collection %s.%s;
    bytemark_mongo_timeout 1s;
    bytemark_mysql %s;
    bytemark_mysql_timeout 2s;

    server {
        listen 127.0.0.1:%d backlog=4096;

        # the ceiling: a static answer of the size of a typical tickets answer,
        # with the same extra headers
        location = /static {
            add_header X-Bytemark-Source mongo;
            add_header ETag '"0123456789abcdef0123456789abcdef01234567"';
            return 200 '%s';
        }

        location = /mongo/tickets {
            bytemark_user_id $arg_user_id;
            bytemark_tickets;
        }

        # users without a cache entry: MongoDB miss, then MySQL, no fill
        location = /fallback/tickets {
            bytemark_user_id $arg_user_id;
            bytemark_cache_fill off;
            bytemark_tickets;
        }
%s
        location = /status {
            bytemark_status;
        }
    }
''' % (self.mongo_port, MONGO_DB, MONGO_COLL, self.mysql_directive(), port, esc, mc_loc)

    def conf_b(self, port):
        """nginx B: MySQL only (no MongoDB in the configuration)."""
        return '''    bytemark_mysql %s;
    bytemark_mysql_timeout 2s;

    server {
        listen 127.0.0.1:%d backlog=4096;

        location = /mysql/tickets {
            bytemark_user_id $arg_user_id;
            bytemark_tickets;
        }

        location = /status {
            bytemark_status;
        }
    }
''' % (self.mysql_directive(), port)

    def conf_c(self, port):
        """nginx C: nginx A's lookups with FerretDB as the MongoDB (the URI is http-level)."""
        return '''    bytemark_mongo_uri "mongodb://127.0.0.1:%d/";
    bytemark_mongo_collection %s.%s;
    bytemark_mongo_timeout 1s;
    bytemark_mysql %s;
    bytemark_mysql_timeout 2s;

    server {
        listen 127.0.0.1:%d backlog=4096;

        location = /mongo/tickets {
            bytemark_user_id $arg_user_id;
            bytemark_tickets;
        }

        location = /fallback/tickets {
            bytemark_user_id $arg_user_id;
            bytemark_cache_fill off;
            bytemark_tickets;
        }

        location = /status {
            bytemark_status;
        }
    }
''' % (self.ferret_port, MONGO_DB, MONGO_COLL, self.mysql_directive(), port)

    @staticmethod
    def named(body):
        """The same configuration with its backend written as one named backend: the
        http-level backend directives (before the first server block) moved into
        `bytemark_upstream bench { }`, which `bytemark_backend bench;` selects."""
        head, sep, rest = body.partition('\n    server {')
        inner = ''.join('    ' + l + '\n' for l in head.strip('\n').split('\n'))
        return '    bytemark_upstream bench {\n%s    }\n    bytemark_backend bench;\n%s%s' % (inner, sep, rest)

    def nginx_test(self, conf):
        r = subprocess.run([self.nginx_bin, '-t', '-c', conf], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
        return r.returncode, r.stdout.decode(errors='replace')

    def start_nginx(self, name, conf, port, workers):
        d = os.path.dirname(conf)
        rc, out = self.nginx_test(conf)
        if rc:
            raise RuntimeError('nginx -t failed for %s:\n%s' % (name, out))
        p = self.procs.spawn('nginx-' + name, [self.nginx_bin, '-c', conf],
                             os.path.join(d, 'stderr.log'), stop_sig=signal.SIGTERM)
        self.nginx_dirs[p.pid] = d          # measure() reads its error log
        wait_port(port, p, 'nginx ' + name)
        end = time.time() + 15
        while len(self.workers(p)) < workers:
            if time.time() > end or p.poll() is not None:
                raise RuntimeError('nginx %s workers did not start:\n%s'
                                   % (name, tail(os.path.join(d, 'error.log'))))
            time.sleep(0.05)
        return p

    def our_pids(self):
        pids = []
        for _, p, _ in self.procs.items:
            if p.poll() is None:
                pids.append(p.pid)
                pids += children_of(p.pid)
        return pids

    def our_cpu(self):
        t = self_and_children_cpu()
        for pid in self.our_pids():
            try:
                t += cpu_seconds(pid)
            except (OSError, ValueError):
                pass
        return t

    def foreign_load(self, seconds=1.0):
        """Cores used by processes that are not ours during `seconds`, and the top ones."""
        ours = set(self.our_pids()) | {os.getpid()}
        m0, o0, p0 = machine_cpu(), self.our_cpu(), all_cpu()
        time.sleep(seconds)
        m1, o1, p1 = machine_cpu(), self.our_cpu(), all_cpu()
        load = max(0.0, ((m1[0] - m0[0]) / CLK_TCK - (o1 - o0)) / seconds)
        top = sorted(((c - p0[pid][1], name) for pid, (name, c) in p1.items()
                      if pid in p0 and pid not in ours and c - p0[pid][1] > 0.02 * seconds), reverse=True)
        return load, ['%s %.0f%%' % (n, 100 * c / seconds) for c, n in top[:4]]

    def wait_quiet(self):
        """Waits (within a total budget) until other processes leave the machine alone."""
        limit = self.a.quiet_cores
        while True:
            load, top = self.foreign_load(1.0)
            if load <= limit:
                return load
            if self.quiet_budget <= 0:
                if not self.quiet_warned:
                    log('machine still busy with other work (%.2f cores%s); measuring anyway'
                        % (load, ': ' + ', '.join(top) if top else ''))
                    self.quiet_warned = True
                return load
            log('waiting for a quiet machine: other processes use %.2f cores%s'
                % (load, ' (%s)' % ', '.join(top) if top else ''))
            t = time.time()
            time.sleep(4)
            self.quiet_budget -= time.time() - t + 1
            self.res['quiet_waited_s'] = self.res.get('quiet_waited_s', 0) + time.time() - t + 1

    @staticmethod
    def workers(master):
        out = []
        for pid in children_of(master.pid):
            try:
                with open('/proc/%d/cmdline' % pid, 'rb') as f:
                    c = f.read()
            except OSError:
                continue
            if b'worker process' in c and b'shutting down' not in c:
                out.append(pid)
        return out

    def start_nginxes(self):
        # B first: its MySQL answers give the typical answer size for the ceiling
        self.port_b = free_port()
        self.nginx_b = self.start_nginx('b', self.nginx_conf('nginx-b', self.port_b, self.conf_b(self.port_b)),
                                        self.port_b, self.a.workers)
        sizes, bodies = [], []
        rng = random.Random(5)
        conn = http.client.HTTPConnection('127.0.0.1', self.port_b, timeout=10)
        for _ in range(300):
            uid = rng.randint(1, self.mongo_users)
            conn.request('GET', '/mysql/tickets?user_id=%d' % uid)
            r = conn.getresponse()
            body = r.read()
            if r.status != 200 or r.getheader('X-Bytemark-Source') != 'mysql':
                raise RuntimeError('nginx B: user %d: %d %s %r' % (uid, r.status,
                                   r.getheader('X-Bytemark-Source'), body[:300]))
            sizes.append(len(body))
            bodies.append(body)
        conn.close()
        med = int(statistics.median(sizes))
        mean = statistics.mean(sizes)
        # the largest answer not over the mean size, padded to it with blanks (still
        # JSON): wrk's bytes per response then match the lookups'
        target = int(round(mean))
        body = max((b for b in bodies if len(b) <= target), key=len).decode()
        body = body[:-1] + ' ' * (target - len(body.encode())) + '}'
        body = body.replace('$', 'S')      # no variables in `return`
        self.res['answer_bytes'] = {'median': med, 'min': min(sizes), 'max': max(sizes),
                                    'mean': statistics.mean(sizes)}
        log('typical tickets answer: median %d bytes (min %d, max %d)' % (med, min(sizes), max(sizes)))

        self.port_a = free_port()
        conf = self.nginx_conf('nginx-a', self.port_a, self.conf_a(self.port_a, True, body))
        rc, out = self.nginx_test(conf)
        self.mc = True
        if rc:
            if 'bytemark_microcache' in out:
                self.mc = False
                self.mc_why = out.strip().splitlines()[-2 if len(out.strip().splitlines()) > 1 else -1]
                log('micro-cache not available in this build: ' + self.mc_why)
                conf = self.nginx_conf('nginx-a', self.port_a, self.conf_a(self.port_a, False, body))
            else:
                raise RuntimeError('nginx -t failed for nginx A:\n' + out)
        self.nginx_a = self.start_nginx('a', conf, self.port_a, self.a.workers)
        self.static_len = len(body.encode())
        log('nginx A on %d (MongoDB + MySQL), nginx B on %d (MySQL only), %d worker(s) each'
            % (self.port_a, self.port_b, self.a.workers))
        if self.ferret:
            self.port_c = free_port()
            self.nginx_c = self.start_nginx('c', self.nginx_conf('nginx-c', self.port_c, self.conf_c(self.port_c)),
                                            self.port_c, self.a.workers)
            log('nginx C on %d (FerretDB + MySQL)' % self.port_c)
        self.nginx_a0 = self.nginx_b0 = self.nginx_a2 = self.nginx_b2 = None
        if self.a.baseline_module:
            # the same two configurations with the baseline's module, side by side
            # (side_by_side); and, when this build has named backends, the same two
            # written as one named backend (bytemark_upstream + bytemark_backend)
            bm = self.a.baseline_module
            self.port_a0, self.port_b0 = free_port(), free_port()
            self.nginx_a0 = self.start_nginx('a0', self.nginx_conf('nginx-a0', self.port_a0, self.conf_a(
                self.port_a0, False, body), module=bm), self.port_a0, self.a.workers)
            self.nginx_b0 = self.start_nginx('b0', self.nginx_conf('nginx-b0', self.port_b0, self.conf_b(
                self.port_b0), module=bm), self.port_b0, self.a.workers)
            log('baseline (%s): nginx A0 on %d, nginx B0 on %d' % (self.a.baseline_label or bm, self.port_a0,
                                                                    self.port_b0))
            self.port_a2, self.port_b2 = free_port(), free_port()
            conf_a2 = self.nginx_conf('nginx-a2', self.port_a2, self.named(self.conf_a(self.port_a2, False, body)))
            rc, out = self.nginx_test(conf_a2)
            if rc == 0:
                self.nginx_a2 = self.start_nginx('a2', conf_a2, self.port_a2, self.a.workers)
                self.nginx_b2 = self.start_nginx('b2', self.nginx_conf('nginx-b2', self.port_b2, self.named(
                    self.conf_b(self.port_b2))), self.port_b2, self.a.workers)
                log('named backend: nginx A2 on %d, nginx B2 on %d' % (self.port_a2, self.port_b2))
            else:
                log('no named backends in this build: ' + out.strip().splitlines()[0])
        mysql_batch.start(self, body)
        log('nginx A1 on %d, nginx B1 on %d: A and B with bytemark_mysql_batch 1' % (self.port_a1, self.port_b1))
        if self.a.only in (None, 'replica-reads'):
            replica_reads.start(self, replica_env())

    def check(self, port, path, want_source, want_cache=None):
        conn = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
        conn.request('GET', path)
        r = conn.getresponse()
        body = r.read()
        conn.close()
        src, cs = r.getheader('X-Bytemark-Source'), r.getheader('X-Cache-Status')
        if r.status != 200 or (want_source and src != want_source) or (want_cache and cs != want_cache):
            raise RuntimeError('GET %s: %d source=%s cache=%s %r' % (path, r.status, src, cs, body[:300]))
        return body

    def status(self, port):
        conn = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
        conn.request('GET', '/status')
        r = conn.getresponse()
        body = r.read()
        conn.close()
        return json.loads(body)

    def drain(self, port, timeout=15):
        """Waits until no backend call is in flight and every circuit breaker is closed.

        wrk closes its connections with requests in flight when a run ends; the module
        counts those abandoned calls as stuck until they return, and lookups arriving
        meanwhile skip the backend and count as its failures (enough of them open the
        breaker for 2 s). So a run must not start right after another one ends."""
        end = time.time() + timeout
        while True:
            st = self.status(port)
            busy = st.get('bytemark_thread_pool_queue', 0)
            opened = []
            for k, v in st.get('bytemark_breaker_open', {}).items():
                if isinstance(v, dict):
                    opened += [k + v2 for v2, x in v.items() if x]
                elif v:
                    opened.append(k)
            if not busy and not opened:
                return
            if time.time() > end:
                log('warning: still %d calls in flight, breakers open: %s' % (busy, opened))
                return
            time.sleep(0.1)

    # ---- wrk

    def wrk(self, port, prefix, lo, hi, duration, conns, threads):
        cmd = ['wrk', '-t%d' % threads, '-c%d' % conns, '-d%ds' % duration, '--timeout', '10s',
               '-s', os.path.join(ROOT, 'bench', 'random_ids.lua'),
               'http://127.0.0.1:%d' % port, '--', prefix, str(lo), str(hi)]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = r.stdout.decode(errors='replace')
        m = re.search(r'^BENCH_JSON (\{.*\})$', out, re.M)
        if r.returncode or not m:
            raise RuntimeError('wrk failed (%d):\n%s' % (r.returncode, out))
        return json.loads(m.group(1))

    def measure(self, key, label, master, port, prefix, lo, hi, dbs, expect, conns=None,
                duration=None, warm=True, mongo_server=None):
        conns = conns or self.a.connections
        threads = min(self.a.wrk_threads, conns)
        duration = duration or self.duration
        elog = os.path.join(self.nginx_dirs[master.pid], 'error.log')
        try:
            elog_off = os.path.getsize(elog)
        except OSError:
            elog_off = 0
        pre_load = self.wait_quiet()
        if warm and self.warmup:
            self.wrk(port, prefix, lo, hi, self.warmup, conns, threads)
        self.drain(port)
        workers = self.workers(master)
        ours0 = self.our_cpu()
        all0 = all_cpu()
        db_pids = {'mysql': self.mysqld.pid, 'mongo': self.mongo.pid}
        if self.ferret:
            db_pids['ferretdb'] = self.ferret.pid
        st0 = self.status(port)
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        m0 = machine_cpu()
        w0 = sum(cpu_seconds(p) for p in workers)
        ws0 = sum(cpu_split(p)[1] for p in workers)
        d0 = {k: cpu_seconds(p) for k, p in db_pids.items()}
        w = self.wrk(port, prefix, lo, hi, duration, conns, threads)
        w1 = sum(cpu_seconds(p) for p in workers)
        ws1 = sum(cpu_split(p)[1] for p in workers)
        d1 = {k: cpu_seconds(p) for k, p in db_pids.items()}
        m1 = machine_cpu()
        ours1 = self.our_cpu()
        all1 = all_cpu()
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        st1 = self.status(port)
        n = w['requests']
        secs = w['duration_us'] / 1e6
        answers = {k: st1['bytemark_answers_total'].get(k, 0) - st0['bytemark_answers_total'].get(k, 0)
                   for k in ('mongo', 'mysql', 'stale', 'microcache')}
        errs = {}
        for b, kinds in st1.get('bytemark_backend_errors_total', {}).items():
            for kind, v in kinds.items():
                dv = v - st0['bytemark_backend_errors_total'][b][kind]
                if dv:
                    errs['%s_%s' % (b, kind)] = dv
        mce = {}
        if 'bytemark_microcache_events_total' in st1:
            for k, v in st1['bytemark_microcache_events_total'].items():
                mce[k] = v - st0['bytemark_microcache_events_total'].get(k, 0)
        res = {
            'label': label, 'mongo_server': mongo_server, 'users': '%d..%d' % (lo, hi), 'nusers': hi - lo + 1, 'databases': dbs,
            'connections': conns, 'wrk_threads': threads, 'duration_s': secs,
            'requests': n, 'rps': n / secs,
            'p50_ms': w['p50_us'] / 1000, 'p90_ms': w['p90_us'] / 1000,
            'p99_ms': w['p99_us'] / 1000, 'max_ms': w['max_us'] / 1000,
            'errors': {k[7:]: v for k, v in w.items() if k.startswith('errors_') and v},
            'nginx_cpu_s': w1 - w0,
            'nginx_cpu_per_10k': (w1 - w0) / n * 1e4 if n else None,
            'nginx_us_per_req': (w1 - w0) / n * 1e6 if n else None,
            'nginx_sys_us_per_req': (ws1 - ws0) / n * 1e6 if n else None,
            'mysql_cpu_per_10k': (d1['mysql'] - d0['mysql']) / n * 1e4 if n else None,
            'mongo_cpu_per_10k': (d1['mongo'] - d0['mongo']) / n * 1e4 if n else None,
            'ferretdb_cpu_per_10k': (d1['ferretdb'] - d0['ferretdb']) / n * 1e4 if n and self.ferret else None,
            'mysql_cpu_util': (d1['mysql'] - d0['mysql']) / secs,
            'mongo_cpu_util': (d1['mongo'] - d0['mongo']) / secs,
            'ferretdb_cpu_util': (d1['ferretdb'] - d0['ferretdb']) / secs if self.ferret else None,
            'nginx_cpu_util': (w1 - w0) / secs,
            'wrk_cpu_util': ((ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)) / secs,
            'machine_busy': (m1[0] + m1[1] - m0[0] - m0[1]) / max(1, m1[3] - m0[3]),
            'softirq_cores': (m1[1] - m0[1]) / CLK_TCK / secs,
            'steal_cores': (m1[2] - m0[2]) / CLK_TCK / secs,
            'other_cores': max(0.0, ((m1[0] - m0[0]) / CLK_TCK - (ours1 - ours0)) / secs),
            'other_top': ['%s %.0f%%' % (nm, 100 * c / secs) for c, nm in sorted(
                ((c - all0[pid][1], nm) for pid, (nm, c) in all1.items()
                 if pid in all0 and pid not in set(self.our_pids()) | {os.getpid()}
                 and c - all0[pid][1] > 0.02 * secs), reverse=True)[:4]],
            'other_cores_before': pre_load,
            'answers': answers, 'backend_errors': errs, 'microcache_events': mce,
            'bytes_per_req': w['bytes'] / n if n else 0,
        }
        if expect:
            res['expected_share'] = answers.get(expect, 0) / n if n else 0
        try:
            with open(elog, errors='replace') as fh:
                fh.seek(elog_off)
                bad = [l.rstrip() for l in fh if re.search(r'\[(warn|error|crit|alert|emerg)\]', l)]
        except OSError:
            bad = []
        res['error_log'] = bad[:10]
        res['error_log_lines'] = len(bad)
        problems = []
        if res['errors'] or sum(errs.values()) > conns:
            # a few backend errors are the run's end: wrk closes its connections with
            # requests in flight, whose next stage then finds the backend "stuck"
            problems.append('errors %s' % dict(res['errors'], **errs))
        if bad:
            problems.append('%d warnings/errors in the error log, e.g. %s' % (len(bad), bad[0][20:200]))
        if expect and res['expected_share'] < 0.99:
            problems.append('only %.1f%% answered from %s' % (100 * res['expected_share'], expect))
        if res['other_cores'] > self.a.quiet_cores:
            problems.append('other processes used %.2f cores%s' % (
                res['other_cores'], ' (%s)' % ', '.join(res['other_top']) if res['other_top'] else ''))
        res['problems'] = problems
        log('%-11s %-14s c=%-3d %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  nginx %5.1f us/req  '
            'mysql %.3f s/10k  mongo %.3f s/10k  ferretdb %.3f s/10k  busy %3.0f%%%s%s'
            % (key, res['users'], conns, res['rps'], res['p50_ms'], res['p99_ms'],
               res['nginx_us_per_req'] or 0, res['mysql_cpu_per_10k'] or 0, res['mongo_cpu_per_10k'] or 0,
               res['ferretdb_cpu_per_10k'] or 0,
               res['machine_busy'] * 100,
               ('  %s %.1f%%' % (expect, res['expected_share'] * 100)) if expect else '',
               ('  PROBLEMS: ' + '; '.join(problems)) if problems else ''))
        return res

    def scenarios(self):
        A, B = self.nginx_a, self.nginx_b
        pa, pb = self.port_a, self.port_b
        nm, nu = self.mongo_users, self.mysql_users
        fb_lo = nm + 1
        # sanity: each location answers from where it should
        self.check(pa, '/mongo/tickets?user_id=1', 'mongo')
        self.check(pb, '/mysql/tickets?user_id=1', 'mysql')
        self.check(pa, '/fallback/tickets?user_id=%d' % fb_lo, 'mysql')
        self.check(pa, '/fallback/tickets?user_id=%d' % fb_lo, 'mysql')   # not filled
        S = self.res['scenarios']
        # The ceiling and the micro-cache in alternating rounds, so that whatever else
        # happens on the machine meanwhile falls on both alike.
        rounds = self.a.rounds or (2 if self.quick else 5)
        dur = max(2, self.duration * 2 // 5) if rounds > 1 else self.duration
        ceil_runs, mc_runs = [], []
        for i in range(rounds):
            ceil_runs.append(self.measure('ceiling', 'nginx `return 200`, same body size (ceiling)',
                                          A, pa, '/static?user_id=', 1, nm, [], None, duration=dur,
                                          warm=i == 0))
            if not self.mc:
                continue
            if i == 0:
                # fill the hot set, then check that it answers from the micro-cache
                conn = http.client.HTTPConnection('127.0.0.1', pa, timeout=10)
                for uid in range(1, self.hot + 1):
                    conn.request('GET', '/mc/tickets?user_id=%d' % uid)
                    r = conn.getresponse()
                    r.read()
                conn.close()
                self.check(pa, '/mc/tickets?user_id=1', 'mongo', 'HIT')
            mc_runs.append(self.measure('microcache', 'micro-cache hits (hot set of %d users)' % self.hot,
                                        A, pa, '/mc/tickets?user_id=', 1, self.hot, ['mongo'], 'microcache',
                                        duration=dur, warm=i == 0))
        S['ceiling'] = self.combine(ceil_runs)
        if self.mc:
            S['microcache'] = self.combine(mc_runs)
            S['microcache']['round_ratios'] = [m['rps'] / c['rps'] for c, m in zip(ceil_runs, mc_runs)]
        else:
            S['microcache'] = {'label': 'micro-cache hits', 'not_available': self.mc_why}

        if self.mc:
            self.microcache_expiry()

        # Each lookup over the whole data set, then at once over 1 000 users, loaded
        # and one request at a time: latency against data set size (index use).
        I = self.res['index']
        small = self.small
        for key, label, master, port, prefix, lo, hi, dbs, exp in (
                ('mongo', 'MongoDB hits', A, pa, '/mongo/tickets?user_id=', 1, nm, ['mongo'], 'mongo'),
                ('mysql', 'MySQL, no MongoDB configured', B, pb, '/mysql/tickets?user_id=', 1, nu,
                 ['mysql'], 'mysql'),
                ('fallback', 'MySQL fallback after a MongoDB miss (fill off)', A, pa,
                 '/fallback/tickets?user_id=', fb_lo, nu, ['mongo', 'mysql'], 'mysql')):
            S[key] = self.measure(key, label, master, port, prefix, lo, hi, dbs, exp,
                                  mongo_server='stand-in' if 'mongo' in dbs else None)
            x = I[key] = {'full': S[key]}
            x['small'] = self.measure(key + '-1k', label, master, port, prefix, lo, lo + small - 1, dbs, exp)
            x['c1_small'] = self.measure(key + '-1k', label, master, port, prefix, lo, lo + small - 1, dbs,
                                         exp, conns=1, duration=self.c1_duration, warm=False)
            x['c1_full'] = self.measure(key, label, master, port, prefix, lo, hi, dbs, exp, conns=1,
                                        duration=self.c1_duration, warm=False)

        self.connection_sweep()
        mysql_batch.sweep(self)
        replica_reads.sweep(self, replica_env())

        # The same hits and misses against FerretDB, a real MongoDB-wire server. Its hits
        # only over the users it holds; its misses over the stand-in's miss range (no cache
        # entry in either). No runs over 1 000 users: FerretDB scans its collection anyway.
        if not self.ferret:
            for key in ('ferretdb_mongo', 'ferretdb_fallback'):
                S[key] = {'label': 'FerretDB', 'not_available': self.ferret_why}
            return
        C, pc, nf = self.nginx_c, self.port_c, self.ferret_docs
        self.check(pc, '/mongo/tickets?user_id=1', 'mongo')
        self.check(pc, '/fallback/tickets?user_id=%d' % fb_lo, 'mysql')
        self.check(pc, '/fallback/tickets?user_id=%d' % fb_lo, 'mysql')   # not filled
        S['ferretdb_mongo'] = self.measure('ferretdb_mongo', 'MongoDB hits', C, pc, '/mongo/tickets?user_id=',
                                           1, nf, ['ferretdb'], 'mongo', mongo_server='FerretDB')
        S['ferretdb_fallback'] = self.measure('ferretdb_fallback', 'MySQL fallback after a MongoDB miss (fill off)',
                                              C, pc, '/fallback/tickets?user_id=', fb_lo, nu,
                                              ['ferretdb', 'mysql'], 'mysql', mongo_server='FerretDB')

    MC_EXPIRY_TTL = 5
    MC_EXPIRY_ROUNDS = 2

    def microcache_expiry(self):
        """Issue 16: the micro-cache's tail latency while its entries expire. The hot set
        at ttl=5s (/mc5/tickets), filled all at once by the first round's warm-up so that
        it expires all at once, for long enough to span a few expiries; beside it, at the
        same connection count and in alternating rounds so that the machine's drift falls
        on all three alike, the ceiling and the same hot set at ttl=10m (/mc/tickets,
        which does not expire during the run): what the micro-cache costs by itself, and
        what its expiries add to that."""
        A, pa = self.nginx_a, self.port_a
        conns = self.a.connections
        dur = 12 if self.quick else 15
        short = max(4, dur // 3)
        rounds = {'static': [], 'steady': [], 'microcache': []}
        for i in range(self.MC_EXPIRY_ROUNDS):
            rounds['static'].append(self.measure(
                'mc-expiry-ceiling', 'nginx `return 200`, same body size (ceiling)',
                A, pa, '/static?user_id=', 1, self.mongo_users, [], None, duration=short))
            rounds['steady'].append(self.measure(
                'mc-expiry-steady', 'micro-cache, ttl=10m (no expiry during the run)',
                A, pa, '/mc/tickets?user_id=', 1, self.hot, ['mongo'], 'microcache',
                duration=short))
            rounds['microcache'].append(self.measure(
                'mc-expiry', 'micro-cache, ttl=%ds (hot set of %d users)' % (
                    self.MC_EXPIRY_TTL, self.hot),
                A, pa, '/mc5/tickets?user_id=', 1, self.hot, ['mongo'], 'microcache',
                duration=dur))
        x = {'ttl_s': self.MC_EXPIRY_TTL, 'connections': conns, 'rounds': rounds}
        # each scenario's first round stands for it in the older layout the goal reads
        for k, runs in rounds.items():
            x[k] = dict(runs[0])
            x[k]['p99_ms_rounds'] = [r['p99_ms'] for r in runs]
            x[k]['p99_ms'] = sum(r['p99_ms'] for r in runs) / len(runs)
        self.res['microcache_expiry'] = x

    def microcache_expiry_md(self):
        x = self.res['microcache_expiry']
        mc = x['microcache']
        out = ['## Micro-cache expiry (issue 16)', '',
               'The micro-cache over a hot set of %s users at `ttl=%ds`, filled at once by the first '
               'round\'s warm-up (so that the whole set expires together), for %.0f s a round: %.0f '
               'expiries, each entry refreshed while it is served. Beside it, in %d alternating rounds '
               'at %d connections: the ceiling, and the same hot set at `ttl=10m` (no expiry during '
               'the run). *p99 (mean)* is the mean of the rounds\' p99s.' % (
                   mc['nusers'], x['ttl_s'], mc['duration_s'], mc['duration_s'] / x['ttl_s'],
                   len(x.get('rounds', {}).get('static', [1])), x['connections']), '',
               '| scenario | round | req/s | p50 ms | p90 ms | p99 ms | max ms | micro-cache events |',
               '|---|--:|--:|--:|--:|--:|--:|---|']
        rounds = x.get('rounds') or {'static': [x['static']], 'microcache': [x['microcache']]}
        for k in ('static', 'steady', 'microcache'):
            for i, s in enumerate(rounds.get(k, [])):
                ev = ', '.join('%s %d' % kv for kv in sorted(s['microcache_events'].items()) if kv[1]) or '—'
                out.append('| %s%s | %d | %.0f | %.2f | %.2f | %.2f | %.2f | %s |' % (
                    s['label'], ' ⚠' if s['problems'] else '', i + 1, s['rps'], s['p50_ms'],
                    s['p90_ms'], s['p99_ms'], s['max_ms'], ev))
        out.append('')
        line = ['p99 (mean): ceiling %.2f ms' % x['static']['p99_ms']]
        if 'steady' in x:
            line.append('micro-cache at ttl=10m %.2f ms' % x['steady']['p99_ms'])
        line.append('at ttl=%ds %.2f ms' % (x['ttl_s'], mc['p99_ms']))
        out.append(', '.join(line) + '.')
        if len(rounds.get('static', [])) > 1:
            out.append('')
            out.append('Round by round, micro-cache p99 over the ceiling\'s: %s; the ceiling\'s own p99 '
                       'ranged %.2f–%.2f ms.' % (
                           ', '.join('%.2f×' % (m['p99_ms'] / c['p99_ms']) for c, m in
                                     zip(rounds['static'], rounds['microcache']) if c['p99_ms']),
                           min(c['p99_ms'] for c in rounds['static']),
                           max(c['p99_ms'] for c in rounds['static'])))
        if 'steady' in x:
            out.append('')
            out.append('What the expiries add to the micro-cache\'s p99: %+.2f ms (%.2f× the ttl=10m p99).' % (
                mc['p99_ms'] - x['steady']['p99_ms'],
                mc['p99_ms'] / x['steady']['p99_ms'] if x['steady']['p99_ms'] else float('inf')))
        return '\n'.join(out)

    def microcache_expiry_goal(self):
        x = self.res.get('microcache_expiry')
        if not x:
            return []
        mc, st = x['microcache'], x['static']
        ratio = mc['p99_ms'] / st['p99_ms'] if st['p99_ms'] else float('inf')
        n = len(mc.get('p99_ms_rounds', [1]))
        return [{'met': ratio <= 2.0,
                 'text': 'issue 16: micro-cache p99 within 2× of the static answer\'s p99 (ttl=%ds, %s users, '
                         '%d connections, %.0f s × %d rounds, mean of the rounds\' p99s): %.2f against '
                         '%.2f ms, %.2f×; %.0f against %.0f req/s (first round)' % (
                             x['ttl_s'], mc['nusers'], x['connections'], mc['duration_s'], n,
                             mc['p99_ms'], st['p99_ms'], ratio, mc['rps'], st['rps'])}]

    CONN_KEYS = ('ceiling', 'mongo', 'mysql', 'fallback')

    def connection_sweep(self):
        """Issue 13: the ceiling, MongoDB hits, MySQL (no MongoDB) and the fallback at each
        of --conn-levels connections, all four scenarios back to back at one level so that
        the ceiling subtracted from each lookup was measured at the same connection count
        and about the same time. c=1 runs --duration's c=1 length, the others --duration."""
        A, B = self.nginx_a, self.nginx_b
        pa, pb = self.port_a, self.port_b
        nm, nu = self.mongo_users, self.mysql_users
        levels = [int(x) for x in str(self.a.conn_levels).split(',') if x.strip()]
        runs = {k: {} for k in self.CONN_KEYS}
        for c in levels:
            dur = self.c1_duration if c == 1 else self.duration
            for key, label, master, port, prefix, lo, hi, dbs, exp in (
                    ('ceiling', 'nginx `return 200`, same body size (ceiling)', A, pa, '/static?user_id=',
                     1, nm, [], None),
                    ('mongo', 'MongoDB hits', A, pa, '/mongo/tickets?user_id=', 1, nm, ['mongo'], 'mongo'),
                    ('mysql', 'MySQL, no MongoDB configured', B, pb, '/mysql/tickets?user_id=', 1, nu,
                     ['mysql'], 'mysql'),
                    ('fallback', 'MySQL fallback after a MongoDB miss (fill off)', A, pa,
                     '/fallback/tickets?user_id=', nm + 1, nu, ['mongo', 'mysql'], 'mysql')):
                runs[key][str(c)] = self.measure('conn-' + key, label, master, port, prefix, lo, hi, dbs, exp,
                                                 conns=c, duration=dur,
                                                 mongo_server='stand-in' if 'mongo' in dbs else None)
        self.res['connections'] = {'levels': levels, 'duration': self.duration, 'c1_duration': self.c1_duration,
                                   'warmup': self.warmup, 'runs': runs, 'baseline': self.conn_baseline()}
        if self.nginx_a0:
            self.res['connections']['side_by_side'] = self.c1_side_by_side()

    def c1_side_by_side(self):
        """This build against the baseline's (--baseline-module, built by run.sh from
        --baseline REV), against the same servers and data, in alternating rounds (the
        order turns each round), so that a change of machine load does not pass for a
        change of the code. At 1 connection: MongoDB hits and MySQL (issue 13's p50
        goal). At --connections: MongoDB hits, MySQL and the fallback, for the worker
        CPU per request (issues 25 and 26: a refactoring and named backends cost
        nothing). With named backends in this build, the same configuration written
        as a named backend is a third side. The goals compare medians."""
        nm, nu = self.mongo_users, self.mysql_users
        out = {'label': self.a.baseline_label or self.a.baseline_module, 'rounds': self.a.baseline_rounds,
               'named': bool(self.nginx_a2), 'wide': {}, 'connections': self.a.connections}
        A = ((self.nginx_a, self.port_a), (self.nginx_a0, self.port_a0), (self.nginx_a2, self.port_a2))
        B = ((self.nginx_b, self.port_b), (self.nginx_b0, self.port_b0), (self.nginx_b2, self.port_b2))
        rows = (('mongo', 'MongoDB hits', A, '/mongo/tickets?user_id=', 1, nm, ['mongo'], 'mongo'),
                ('mysql', 'MySQL, no MongoDB configured', B, '/mysql/tickets?user_id=', 1, nu, ['mysql'], 'mysql'),
                ('fallback', 'MySQL fallback after a MongoDB miss (fill off)', A, '/fallback/tickets?user_id=',
                 nm + 1, nu, ['mongo', 'mysql'], 'mysql'))
        for conns in (1, self.a.connections):
            for key, label, (cur, base, named), prefix, lo, hi, dbs, exp in rows:
                if conns == 1 and key == 'fallback':
                    continue
                sides = [('current', cur), ('baseline', base)] + ([('named', named)] if named[0] else [])
                r = {'label': label, 'problems': []}
                for side, _ in sides:
                    r[side], r[side + '_us'] = [], []
                for i in range(self.a.baseline_rounds):
                    k = i % len(sides)
                    for side, (master, port) in sides[k:] + sides[:k]:
                        m = self.measure('sbs%d-%s-%s' % (conns, side, key), label, master, port, prefix, lo, hi,
                                         dbs, exp, conns=conns, duration=self.c1_duration, warm=(i == 0))
                        r[side].append(m['p50_ms'])
                        r[side + '_us'].append(m['nginx_us_per_req'])
                        r['problems'] += ['%s: %s' % (side, p) for p in m['problems']]
                for side, _ in sides:
                    r[side + '_median'] = statistics.median(r[side])
                    r[side + '_us_median'] = statistics.median(r[side + '_us'])
                log('side by side, c=%d, %s: worker %.1f us/req (this), %.1f (baseline)%s; p50 %.3f / %.3f ms' % (
                    conns, key, r['current_us_median'], r['baseline_us_median'],
                    ', %.1f (named backend)' % r['named_us_median'] if 'named_us_median' in r else '',
                    r['current_median'], r['baseline_median']))
                if conns == 1:
                    out[key] = r
                else:
                    out['wide'][key] = r
        return out

    def conn_baseline(self):
        """The c=1 p50 of MongoDB hits and of MySQL in the newest committed, non-quick
        bench/results/*.json that is not this run's own output (as committed: git show
        HEAD:...). Its `connections` section if it has one, else its index runs at c=1 over
        the whole data set (`index.<key>.c1_full`); a value it lacks stays None."""
        own = os.path.realpath(self.res['md_path'][:-3] + '.json')
        try:
            files = run(['git', '-C', ROOT, 'ls-files', '--', 'bench/results/*.json']).split()
        except Exception as e:
            return {'file': None, 'why': 'git ls-files failed: %s' % e}
        cands = []
        for rel in files:
            if rel.endswith('-quick.json') or os.path.realpath(os.path.join(ROOT, rel)) == own:
                continue
            try:
                data = json.loads(run(['git', '-C', ROOT, 'show', 'HEAD:' + rel]))
            except Exception:
                continue
            cands.append((str(data.get('date', '')), rel, data))
        if not cands:
            return {'file': None, 'why': 'no committed non-quick bench/results/*.json'}
        date, rel, data = max(cands, key=lambda x: (x[0], x[1]))
        out = {'file': rel, 'date': date}
        for key in ('mongo', 'mysql'):
            v, src = None, None
            cr = data.get('connections', {}).get('runs', {}).get(key, {}).get('1')
            if cr and cr.get('p50_ms') is not None:
                v, src = cr['p50_ms'], 'connections.runs.%s.1' % key
            else:
                x = data.get('index', {}).get(key, {}).get('c1_full')
                if x and x.get('p50_ms') is not None:
                    v, src = x['p50_ms'], 'index.%s.c1_full' % key
            out[key + '_c1_p50_ms'] = v
            out[key + '_source'] = src
        return out

    @staticmethod
    def conn_db_us(key, s):
        """(database CPU µs per request, which database) of a connection-sweep run."""
        if key == 'mongo':
            return s['mongo_cpu_per_10k'] * 100, 'stand-in'
        if key == 'mysql':
            return s['mysql_cpu_per_10k'] * 100, 'MariaDB'
        if key == 'fallback':
            return (s['mongo_cpu_per_10k'] + s['mysql_cpu_per_10k']) * 100, 'MariaDB + stand-in'
        return None, None

    @staticmethod
    def combine(runs):
        """Rounds of one scenario: latencies of the median round, throughput the median,
        CPU per request over all rounds."""
        if len(runs) == 1:
            runs[0]['rounds_rps'] = [runs[0]['rps']]
            return runs[0]
        order = sorted(runs, key=lambda r: r['rps'])
        res = dict(order[len(order) // 2])
        n = sum(r['requests'] for r in runs)
        secs = sum(r['duration_s'] for r in runs)
        res['rounds_rps'] = [r['rps'] for r in runs]
        res['rps'] = statistics.median(res['rounds_rps'])
        res['requests'] = n
        res['duration_s'] = secs
        for k in ('nginx_cpu_s',):
            res[k] = sum(r[k] for r in runs)
        res['nginx_cpu_per_10k'] = res['nginx_cpu_s'] / n * 1e4
        res['nginx_us_per_req'] = res['nginx_cpu_s'] / n * 1e6
        res['nginx_sys_us_per_req'] = sum(r['nginx_sys_us_per_req'] * r['requests'] for r in runs) / n
        for k in ('mysql_cpu_per_10k', 'mongo_cpu_per_10k', 'ferretdb_cpu_per_10k'):
            if res[k] is not None:      # None: FerretDB not run
                res[k] = sum(r[k] * r['requests'] for r in runs) / n
        for k in ('mysql_cpu_util', 'mongo_cpu_util', 'ferretdb_cpu_util', 'nginx_cpu_util', 'wrk_cpu_util',
                  'machine_busy', 'softirq_cores', 'steal_cores', 'other_cores'):
            if res[k] is not None:
                res[k] = sum(r[k] * r['duration_s'] for r in runs) / secs
        res['bytes_per_req'] = sum(r['bytes_per_req'] * r['requests'] for r in runs) / n
        ans = {}
        for r in runs:
            for k, v in r['answers'].items():
                ans[k] = ans.get(k, 0) + v
        res['answers'] = ans
        mce = {}
        for r in runs:
            for k, v in r['microcache_events'].items():
                mce[k] = mce.get(k, 0) + v
        res['microcache_events'] = mce
        res['problems'] = [p for r in runs for p in r['problems']]
        if res.get('expected_share') is not None:
            res['expected_share'] = sum(r['expected_share'] * r['requests'] for r in runs) / n
        return res

    # ---- callgrind profile

    def profile(self):
        if not shutil.which('valgrind') or not shutil.which('callgrind_control'):
            self.res['profile'] = {'error': 'valgrind is not installed'}
            return
        port = free_port()
        static_body = 'x' * self.static_len
        conf = self.nginx_conf('nginx-prof', port, self.conf_a(port, self.mc, static_body), single=True)
        d = os.path.dirname(conf)
        out = os.path.join(d, 'callgrind.out')
        p = self.procs.spawn('nginx-callgrind', [
            'valgrind', '--tool=callgrind', '--instr-atstart=no', '--callgrind-out-file=' + out + '.%p',
            '--dump-instr=no', '--separate-threads=no', self.nginx_bin, '-c', conf],
            os.path.join(d, 'valgrind.log'), stop_sig=signal.SIGTERM)
        wait_port(port, p, 'nginx under callgrind', timeout=120)
        n = self.a.profile_requests or (300 if self.quick else 2000)
        nm, nu = self.mongo_users, self.mysql_users
        rng = random.Random(9)
        conn = http.client.HTTPConnection('127.0.0.1', port, timeout=60)

        def fire(prefix, lo, hi, count):
            for _ in range(count):
                conn.request('GET', prefix + str(rng.randint(lo, hi)))
                r = conn.getresponse()
                r.read()
                if r.status != 200:
                    raise RuntimeError('profile request: %d' % r.status)

        cases = [('static', '/static?user_id=', 1, nm), ('mongo', '/mongo/tickets?user_id=', 1, nm),
                 ('fallback', '/fallback/tickets?user_id=', nm + 1, nu)]
        if self.mc:
            cases.insert(1, ('microcache', '/mc/tickets?user_id=', 1, self.hot))
            for uid in range(1, self.hot + 1):      # the hot set in the zone
                conn.request('GET', '/mc/tickets?user_id=%d' % uid)
                r = conn.getresponse()
                r.read()
        # warm every path (connections, prepared statements) before measuring
        for _, prefix, lo, hi in cases:
            fire(prefix, lo, hi, 50)
        run(['callgrind_control', '-i', 'on', str(p.pid)])
        fire('/static?user_id=', 1, nm, 50)
        prof = {'requests': n, 'cases': {}}
        for name, prefix, lo, hi in cases:
            run(['callgrind_control', '-z', str(p.pid)])
            t = time.time()
            fire(prefix, lo, hi, n)
            run(['callgrind_control', '-d', name, str(p.pid)])
            log('callgrind: %d %s requests in %.1fs' % (n, name, time.time() - t))
        conn.close()
        self.procs.stop(p, timeout=60)
        files = sorted(f for f in os.listdir(d) if f.startswith('callgrind.out.') and '.' in f[14:])
        for name, *_ in cases:
            f = None
            for cand in files:
                with open(os.path.join(d, cand), errors='replace') as fh:
                    head = fh.read(4096)
                if re.search(r'^desc: Trigger: Client Request: %s$' % name, head, re.M) or \
                   re.search(r'Trigger.*\b%s\b' % name, head):
                    f = os.path.join(d, cand)
            if not f:
                continue
            prof['cases'][name] = self.annotate(f, n)
            stem = os.path.basename(self.res['md_path'])[:-3]
            dest = os.path.join(self.a.results_dir, 'callgrind', '%s.%s.out.gz' % (stem, name))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(f, 'rb') as src, gzip.open(dest, 'wb') as dst:
                shutil.copyfileobj(src, dst)
            prof['files'] = prof.get('files', []) + [os.path.relpath(dest, ROOT)]
        self.res['profile'] = prof

    @staticmethod
    def annotate(path, n):
        """Per-request Ir from callgrind_annotate: totals, inclusive by function (recursion
        entries dropped), self cost by function and by shared object."""
        line_re = re.compile(r'^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?\*?\s*(\S+?):(\S+?)(?:\s+\[(.*)\])?\s*$')

        def parse(inclusive):
            txt = run(['callgrind_annotate', '--inclusive=' + ('yes' if inclusive else 'no'),
                       '--threshold=100', path])
            total, rows = 0, []
            for line in txt.splitlines():
                m = re.match(r'^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?PROGRAM TOTALS', line)
                if m:
                    total = int(m.group(1).replace(',', ''))
                    continue
                m = line_re.match(line)
                if m and "'" not in m.group(3):
                    obj = m.group(4) or ('libc.so.6' if m.group(2).startswith('./') else
                                         'ngx_http_bytemark_module.so' if 'ngx_http_bytemark' in m.group(2)
                                         or m.group(3).startswith('ngx_http_bytemark') else m.group(2))
                    rows.append((int(m.group(1).replace(',', '')) / n, m.group(3), os.path.basename(obj)))
            return total / n, rows

        total, incl = parse(True)
        _, excl = parse(False)
        by_obj = {}
        for ir, fn, obj in excl:
            by_obj[obj] = by_obj.get(obj, 0) + ir
        return {'total_ir_per_req': total, 'inclusive': incl[:150], 'exclusive': excl[:60],
                'by_object': sorted(by_obj.items(), key=lambda x: -x[1])}

    # ---- machine

    def machine(self):
        def first(cmd):
            try:
                return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
                                      ).stdout.decode(errors='replace').strip().splitlines()[0]
            except Exception:
                return '?'
        model = '?'
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    model = line.split(':', 1)[1].strip()
                    break
        with open('/proc/meminfo') as f:
            mem = int(f.readline().split()[1]) / 2**20
        import pymongo
        import mongomock

        def pkgver(p):
            return first(['dpkg-query', '-W', '-f=${Version}', p])
        self.res['machine'] = {
            'host': socket.gethostname(), 'nproc': os.cpu_count(), 'model': model,
            'memory_gb': mem, 'kernel': platform.release(),
            'os': first(['sh', '-c', '. /etc/os-release; echo "$PRETTY_NAME"']),
            'nginx': first([self.nginx_bin, '-v']).split('/')[-1],
            'mariadb': first(['/usr/sbin/mariadbd', '--version']),
            'mongodb': 'tools/mongo_standin.py (Python %s, mongomock %s, pymongo %s; wire protocol, '
                       'hash index on user_id) -- not a real mongod' % (
                           platform.python_version(), mongomock.__version__, pymongo.version),
            'ferretdb': first([self.a.ferretdb, '--version']) + ', ' + os.path.relpath(self.a.ferretdb, ROOT)
                        if os.access(self.a.ferretdb, os.X_OK) else 'not built',
            'wrk': first(['wrk', '-v']),
            'libmongoc': pkgver('libmongoc-1.0-0'), 'jansson': pkgver('libjansson4'),
            'mariadb_connector_c': pkgver('libmariadb3'),
            'module': self.module,
            'git': self.a.source_label or first(['git', '-C', ROOT, 'describe', '--always', '--dirty']),
        }

    # ---- report

    def report(self):
        r = self.res
        S, I, M = r['scenarios'], r['index'], r['machine']
        ceil = S['ceiling']
        base_us = ceil['nginx_us_per_req']

        def f(v, fmt='%.0f'):
            return '—' if v is None else fmt % v

        def label(key, s):
            """The row's label and the MongoDB server it asked (reports older than
            FerretDB's rows have no mongo_server: their lookups were the stand-in's)."""
            server = s.get('mongo_server', 'stand-in' if key in ('mongo', 'fallback') else None)
            return s['label'] + (' — ' + server if server else '')

        # each FerretDB row after its stand-in row; reports without them render as before
        keys = [k for k in ('ceiling', 'microcache', 'mongo', 'ferretdb_mongo', 'mysql', 'fallback',
                            'ferretdb_fallback') if k in S]

        lines = []
        w = lines.append
        w('# Benchmark %s — %s%s' % (r['date'], M['host'], ' (--quick)' if self.quick else ''))
        w('')
        w('Command: `bash bench/run.sh%s`, %s.' % (' --quick' if self.quick else '', r['elapsed']))
        w('')
        w('## Machine')
        w('')
        w('| | |')
        w('|---|---|')
        for k, lab in (('nproc', 'CPUs (nproc)'), ('model', 'CPU model'), ('memory_gb', 'memory (GB)'),
                       ('kernel', 'kernel'), ('os', 'OS'), ('nginx', 'nginx'), ('mariadb', 'MariaDB'),
                       ('mongodb', 'MongoDB'), ('ferretdb', 'FerretDB'), ('wrk', 'wrk'), ('libmongoc', 'libmongoc'),
                       ('jansson', 'jansson'), ('mariadb_connector_c', 'MariaDB Connector/C'),
                       ('git', 'module source (git describe)')):
            v = M.get(k)
            if v is None:
                continue
            w('| %s | %s |' % (lab, ('%.1f' % v) if isinstance(v, float) else v))
        w('')
        c = r['config']
        w('## Set-up')
        w('')
        nr = len(S['ceiling'].get('rounds_rps', [1]))
        w('- nginx: %d worker process%s per instance, `thread_pool threads=%d`, MySQL `pool_size=16`, '
          'access log off, keep-alive; wrk `-t%d -c%d` on the same machine, %d s per scenario after a %d s '
          'warm-up%s. nginx A has MongoDB and MySQL configured, nginx B (for the MySQL scenario) only '
          'MySQL%s.' % (c['workers'], 'es' if c['workers'] > 1 else '', c['pool_threads'], c['wrk_threads'],
                      c['connections'], self.duration, self.warmup,
                      '' if nr < 2 else '; the ceiling and the micro-cache in %d alternating rounds of %.0f s '
                      '(median req/s; rounds: ceiling %s, micro-cache %s)' % (
                          nr, S['ceiling']['duration_s'] / nr,
                          ', '.join('%.0f' % x for x in S['ceiling']['rounds_rps']),
                          ', '.join('%.0f' % x for x in S['microcache'].get('rounds_rps', [])) or '—'),
                      ', nginx C (for the FerretDB rows) the configuration of nginx A with FerretDB as its MongoDB'
                      if 'ferretdb_docs' in r['load'] else ''))
        L = r['load']
        w('- Data: %d pass rows for %d users in MySQL (%.1f passes per user, payloads %s), loaded with '
          '`LOAD DATA LOCAL INFILE` in %.0f s (%.0f MB data + %.0f MB indexes, InnoDB buffer pool %s, '
          'binary log on, row format); '
          '%d cache documents (users 1..%d) in the MongoDB stand-in, inserted with `insert_many` (batches '
          'of 1 000) in %.0f s (%.0f documents/s), stand-in RSS %.0f MB -> %.0f MB (%.1f KB per document '
          'of %.0f BSON bytes). Unique index on `user_id`. Generating the data took %.0f s, the whole load '
          '%.0f s.' % (
              L['mysql_rows'], L['mysql_users'], L['mysql_rows'] / L['mysql_users'],
              '%d bytes of JSON each' % r['payload_bytes'], L['mysql_load_s'], L['mysql_data_mb'],
              L['mysql_index_mb'], '256M' if self.quick else '1536M', L['mongo_docs'], self.mongo_users,
              L['mongo_insert_s'], L['mongo_docs'] / L['mongo_insert_s'], L['mongo_rss_before_mb'],
              L['mongo_rss_after_mb'],
              (L['mongo_rss_after_mb'] - L['mongo_rss_before_mb']) * 1024 / max(1, L['mongo_docs']),
              L['mongo_avg_doc_bytes'], L['generate_s'], L['total_s']))
        if 'ferretdb_docs' in L:
            fb = S.get('ferretdb_fallback', {})
            per_doc = ''
            # not when the breaker skipped FerretDB for part of the run: too low then
            if fb.get('ferretdb_cpu_per_10k') and L['ferretdb_docs'] and \
                    sum(fb.get('backend_errors', {}).values()) <= fb['connections']:
                per_doc = (' (in the miss row here %.0f µs of FerretDB CPU per document of the collection, '
                           'against %.0f µs per hit of the stand-in)' % (
                               fb['ferretdb_cpu_per_10k'] * 100 / L['ferretdb_docs'],
                               S['mongo']['mongo_cpu_per_10k'] * 100))
            w('- FerretDB (%s), fresh data: the first %d cache documents (users 1..%d, the same documents '
              'as the stand-in\'s) inserted in %.2f s, unique index on `user_id`. FerretDB 1.24 hands to SQLite '
              'only a filter on `_id` (plan of `find {user_id: 1}`: `%s`, filterPushdown %s), so every lookup '
              'decodes the collection\'s documents until the user\'s, a miss all of them: its CPU per request '
              'grows with the number of documents%s, whence so few (`--ferretdb-docs`), so that its lookups at '
              '-c%d stay within the 1 s `bytemark_mongo_timeout`. Its hits are over users 1..%d, its misses over '
              'the stand-in\'s miss range.' % (
                  M.get('ferretdb', 'FerretDB'), L['ferretdb_docs'], L['ferretdb_docs'], L['ferretdb_insert_s'],
                  L.get('ferretdb_plan'), str(L.get('ferretdb_pushdown')).lower(), per_doc, c['connections'],
                  L['ferretdb_docs']))
        elif 'not_available' in S.get('ferretdb_mongo', {}):
            w('- FerretDB: not run, %s.' % S['ferretdb_mongo']['not_available'])
        w('- Every process of the bench (servers, nginx, wrk) ran at nice %d; other processes on the machine '
          'are not touched, their CPU use during each run is measured and shown below.' % r['nice'])
        if r.get('quiet_waited_s'):
            w('- The bench waited %.0f s in all for other processes to leave the machine alone '
              '(at most %.2f cores of other load before each measurement).' % (
                r['quiet_waited_s'], r['config'].get('quiet_cores', 0.15)))
        ab = r['answer_bytes']
        w('- A tickets answer: %.0f bytes on average, median %d (%d..%d), over 300 random users; the '
          'ceiling returns a %d-byte body with the same extra headers (`ETag`, `X-Bytemark-Source`).'
          % (ab['mean'], ab['median'], ab['min'], ab['max'], self.static_len))
        w('- MySQL plan of the lookup: `%s`' % ' '.join(L['explain'].split('\t')))
        w('')
        w('## Results')
        w('')
        w('| scenario — MongoDB server | users | req/s | p50 ms | p99 ms | nginx worker CPU s / 10k req '
          '| MariaDB CPU s / 10k | stand-in CPU s / 10k | FerretDB CPU s / 10k | × ceiling | module µs / req '
          '| bytes / response | answered from |')
        w('|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|')
        notes = []
        for key in keys:
            s = S[key]
            if 'not_available' in s:
                if key == 'ferretdb_fallback':
                    continue        # one row and one note say it
                w('| %s | — | not available | | | | | | | | | | |' % s['label'])
                notes.append('micro-cache: not available in this build (`%s`)' % s['not_available']
                             if key == 'microcache' else 'FerretDB: not run (%s)' % s['not_available'])
                continue
            exp = '—'
            if s.get('expected_share') is not None:
                exp = ', '.join('%s %.1f%%' % (k, min(100.0, v * 100 / s['requests']))
                                for k, v in s['answers'].items() if v)
                if key == 'microcache' and s['microcache_events']:
                    exp += ' (micro-cache hit events %.1f%%)' % min(100.0, 100.0 * s['microcache_events'].get('hit', 0) / s['requests'])
            flag = ' ⚠' if s['problems'] else ''
            if s['problems']:
                notes.append('%s: %s' % (key, '; '.join(p.replace(' ()', '') for p in s['problems'])))
            w('| %s%s | %s | %.0f | %.2f | %.2f | %.3f | %s | %s | %s | %.2f | %s | %.0f | %s |' % (
                label(key, s), flag, s['users'], s['rps'], s['p50_ms'], s['p99_ms'], s['nginx_cpu_per_10k'],
                f(s['mysql_cpu_per_10k'], '%.3f'), f(s['mongo_cpu_per_10k'], '%.3f'),
                f(s.get('ferretdb_cpu_per_10k'), '%.3f'),
                s['rps'] / ceil['rps'], '—' if key == 'ceiling' else '%.1f' % (s['nginx_us_per_req'] - base_us),
                s['bytes_per_req'], exp))
        w('')
        if notes:
            w('⚠ ' + ' — '.join(notes))
            w('')
        w('*nginx worker CPU* is utime+stime of the worker process(es), the thread-pool threads that run the '
          'drivers included. *module µs / req* is the worker CPU per request minus that of the ceiling '
          '(%.1f µs): what the module adds over serving the same bytes statically. *answered from* comes '
          'from the `bytemark_answers_total` counters of the status page. Where the cores went during each '
          'run (2 cores in all; *kernel irq* is interrupt and softirq time, mostly loopback TCP, which is '
          'not charged to any process; *other* is processes that are not part of the bench):' % base_us)
        w('')
        w('| scenario | nginx (of which sys) | MariaDB | stand-in | FerretDB | wrk | kernel irq | other '
          '| machine busy |')
        w('|---|--:|--:|--:|--:|--:|--:|--:|--:|')
        for key in keys:
            s = S[key]
            if 'not_available' in s:
                continue
            w('| %s | %.2f (%.0f%%) | %.2f | %.2f | %s | %.2f | %.2f | %.2f | %.0f%% |' % (
                key, s['nginx_cpu_util'], 100.0 * s['nginx_sys_us_per_req'] / max(1e-9, s['nginx_us_per_req']),
                s['mysql_cpu_util'], s['mongo_cpu_util'], f(s.get('ferretdb_cpu_util'), '%.2f'),
                s['wrk_cpu_util'],
                s['softirq_cores'], s['other_cores'], s['machine_busy'] * 100))
        w('')
        w('## Full data set against 1 000 users (index use)')
        w('')
        w('| lookup | load | 1 000 users: req/s, p50, p99 | all users: req/s, p50, p99 | p50 ratio | p99 ratio |')
        w('|---|---|---|---|--:|--:|')
        for key in ('mongo', 'mysql', 'fallback'):
            x = I.get(key)
            if not x:
                continue
            for load, a, b in (('c=%d' % x['small']['connections'], x['small'], x['full']),
                               ('c=1', x['c1_small'], x['c1_full'])):
                bad = ' ⚠' if a['problems'] or b['problems'] else ''
                w('| %s%s | %s | %.0f/s, %.2f ms, %.2f ms (users %s) | %.0f/s, %.2f ms, %.2f ms (users %s) | %.2f | %.2f |' % (
                    label(key, S[key]), bad, load, a['rps'], a['p50_ms'], a['p99_ms'], a['users'],
                    b['rps'], b['p50_ms'], b['p99_ms'], b['users'], b['p50_ms'] / a['p50_ms'],
                    b['p99_ms'] / a['p99_ms']))
        w('')
        if r.get('microcache_expiry'):
            w(self.microcache_expiry_md())
            w('')
        if r.get('connections'):
            w(self.connections_md())
            w('')
        if r.get('mysql_batch'):
            w(mysql_batch.md(self))
            w('')
        if r.get('replica_reads'):
            w(replica_reads.md(self))
            w('')
        w('## Goals (issue 6%s)' % (' and issue 13' if r.get('connections') else ''))
        w('')
        for g in r['goals']:
            w('- **%s** — %s' % ('met' if g['met'] else ('NOT MET' if g['met'] is not None else 'not measured'),
                                  g['text']))
        if r.get('profile'):
            w('')
            w(self.profile_md())
        w('')
        with open(r['md_path'], 'w') as fh:
            fh.write('\n'.join(lines))
        return '\n'.join(lines)

    def goals(self):
        S, I = self.res['scenarios'], self.res['index']
        ceil = S['ceiling']
        base = ceil['nginx_us_per_req']
        G = []
        mc = S['microcache']
        if 'not_available' in mc:
            G.append({'met': None, 'text': 'micro-cache hits ≥ 0.8× the ceiling: the micro-cache is not '
                                           'available in this build (%s)' % mc['not_available']})
        else:
            rr = mc.get('round_ratios') or [mc['rps'] / ceil['rps']]
            ratio = statistics.median(rr)
            G.append({'met': ratio >= 0.8, 'text': 'micro-cache hits at ≥ 0.8× the requests/s of the ceiling: '
                      '%.0f against %.0f req/s, %.2f× (median of %d alternating rounds: %s); worker CPU %.1f '
                      'against %.1f µs per request' % (
                          mc['rps'], ceil['rps'], ratio, len(rr), ', '.join('%.2f' % x for x in rr),
                          mc['nginx_us_per_req'], ceil['nginx_us_per_req'])})
        for key, dbk in (('mongo', 'mongo'), ('mysql', 'mysql'), ('fallback', None)):
            s = S[key]
            db = (s['mongo_cpu_per_10k'] + s['mysql_cpu_per_10k']) if dbk is None else s[dbk + '_cpu_per_10k']
            ng = s['nginx_cpu_per_10k']
            G.append({'met': ng < db, 'text': '%s: nginx workers use less CPU per request than the database '
                      'server: %.3f against %.3f s / 10k requests (%.2f×)%s%s' % (
                          s['label'], ng, db, ng / db if db else 0,
                          '' if dbk else ' (MariaDB + stand-in)',
                          '' if dbk == 'mysql' else '; the stand-in is a Python server, a real mongod would '
                          'spend a fraction of that, so this comparison flatters nginx')})
            us = s['nginx_us_per_req'] - base
            G.append({'met': us < 30, 'text': '%s: the module adds %.1f µs of worker CPU per request '
                      '(%.1f − %.1f µs of the ceiling), goal < 30 µs' % (s['label'], us, s['nginx_us_per_req'], base)})
        for key in ('mongo', 'mysql', 'fallback'):
            x = I.get(key)
            if not x:
                continue
            r_loaded = x['full']['p50_ms'] / x['small']['p50_ms']
            r_c1 = x['c1_full']['p50_ms'] / x['c1_small']['p50_ms']
            G.append({'met': r_loaded <= 1.5 and r_c1 <= 1.5,
                      'text': '%s: p50 latency at the full data set within 1.5× of that at 1 000 users: '
                              '%.2f× under load (c=%d), %.2f× one request at a time (p99: %.2f×, %.2f×)' % (
                                  S[key]['label'], r_loaded, x['full']['connections'], r_c1,
                                  x['full']['p99_ms'] / x['small']['p99_ms'],
                                  x['c1_full']['p99_ms'] / x['c1_small']['p99_ms'])})
        G += self.microcache_expiry_goal()
        G += self.connection_goals()
        G += replica_reads.goals(self)
        self.res['goals'] = G

    def connections_md(self):
        """The "Connections (issue 13)" section: each scenario at each connection count."""
        C = self.res['connections']
        R = C['runs']
        c = self.res['config']
        out = ['## Connections (issue 13)', '',
               'The ceiling, MongoDB hits (stand-in), MySQL with no MongoDB configured and the MySQL fallback '
               'after a MongoDB miss (stand-in, fill off), each at %s connections (wrk `-t%d`, at most one '
               'thread per connection), over the whole data set; %d s per run at c=1, %d s otherwise, each after '
               'a %d s warm-up, the four scenarios back to back at each connection count. *module µs / req* is '
               'the worker CPU per request minus the ceiling\'s at the same connection count; *database* is '
               'the CPU per request of MariaDB, of the stand-in (a Python server) or of both (the fallback); '
               '*worker / database* the ratio of the two.' % (
                   ', '.join(str(x) for x in C['levels']), c['wrk_threads'], C['c1_duration'], C['duration'],
                   C['warmup']), '',
               '| scenario | connections | req/s | p50 ms | p99 ms | nginx worker µs / req | module µs / req '
               '| database µs / req | worker / database | answered from |',
               '|---|--:|--:|--:|--:|--:|--:|--:|--:|---|']
        notes = []
        for key in self.CONN_KEYS:
            for lv in C['levels']:
                s = R.get(key, {}).get(str(lv))
                if not s:
                    continue
                ceil = R['ceiling'].get(str(lv))
                mod = '—' if key == 'ceiling' or not ceil else '%.1f' % (s['nginx_us_per_req'] - ceil['nginx_us_per_req'])
                db, dbn = self.conn_db_us(key, s)
                exp = '—'
                if s.get('expected_share') is not None:
                    exp = ', '.join('%s %.1f%%' % (k, min(100.0, v * 100 / s['requests']))
                                    for k, v in s['answers'].items() if v)
                if s['problems']:
                    notes.append('%s c=%d: %s' % (key, lv, '; '.join(p.replace(' ()', '') for p in s['problems'])))
                out.append('| %s%s | %d | %.0f | %.2f | %.2f | %.1f | %s | %s | %s | %s |' % (
                    s['label'] + (' — ' + s['mongo_server'] if s.get('mongo_server') else ''),
                    ' ⚠' if s['problems'] else '', lv, s['rps'], s['p50_ms'], s['p99_ms'], s['nginx_us_per_req'],
                    mod, '—' if db is None else '%.1f (%s)' % (db, dbn),
                    '—' if not db else '%.2f' % (s['nginx_us_per_req'] / db), exp))
        if notes:
            out += ['', '⚠ ' + ' — '.join(notes)]
        sb = C.get('side_by_side')
        if sb:
            out += ['', 'One request at a time, side by side with the baseline (%s: the same servers and data, '
                    '%d alternating rounds of %d s each; medians):' % (sb['label'], sb['rounds'], C['c1_duration']),
                    '', '| scenario | p50 ms, this build | p50 ms, baseline | ratio | rounds (this / baseline) '
                    '| worker µs / req (this / baseline) |', '|---|--:|--:|--:|---|---|']
            for key in ('mongo', 'mysql'):
                r = sb.get(key)
                if not r:
                    continue
                out.append('| %s%s | %.3f | %.3f | %.2f | %s / %s | %.1f / %.1f |' % (
                    r['label'], ' ⚠' if r['problems'] else '', r['current_median'], r['baseline_median'],
                    r['current_median'] / r['baseline_median'], ', '.join('%.3f' % x for x in r['current']),
                    ', '.join('%.3f' % x for x in r['baseline']), r['current_us_median'], r['baseline_us_median']))
        wide = (sb or {}).get('wide') or {}
        if wide:
            named = sb.get('named')
            out += ['', 'Worker CPU per request at %d connections, side by side with the baseline (%s)%s: '
                    '%d alternating rounds of %d s each, medians; µs of nginx worker CPU per request '
                    '(the thread-pool threads included):' % (
                        sb['connections'], sb['label'], ' and with the same configuration written as one named '
                        'backend (`bytemark_upstream bench { … }` + `bytemark_backend bench;`)' if named else '',
                        sb['rounds'], C['c1_duration']),
                    '', '| scenario | worker µs / req, this build | baseline | ratio |%s p50 ms (this / baseline) '
                    '| rounds, µs (this / baseline%s) |' % (' named backend | ratio to this build |' if named else '',
                                                           ' / named' if named else ''),
                    '|---|--:|--:|--:|%s---|---|' % ('--:|--:|' if named else '')]
            for key in ('mongo', 'mysql', 'fallback'):
                r = wide.get(key)
                if not r:
                    continue
                cells = '%.1f | %.1f | %.2f |' % (r['current_us_median'], r['baseline_us_median'],
                                                  r['current_us_median'] / r['baseline_us_median'])
                if named:
                    cells += ' %.1f | %.2f |' % (r['named_us_median'], r['named_us_median'] / r['current_us_median'])
                rounds = ' / '.join(', '.join('%.1f' % x for x in r[sd + '_us'])
                                    for sd in ('current', 'baseline') + (('named',) if named else ()))
                out.append('| %s%s | %s %.3f / %.3f | %s |' % (r['label'], ' ⚠' if r['problems'] else '', cells,
                                                                 r['current_median'], r['baseline_median'], rounds))
        b = C.get('baseline') or {}
        if b.get('file'):
            parts = ['%.3f ms p50 (`%s`)' % (b[k + '_c1_p50_ms'], b[k + '_source'])
                     if b.get(k + '_c1_p50_ms') is not None else 'no baseline' for k in ('mongo', 'mysql')]
            out += ['', 'Baseline of the c=1 goal: `%s` (%s, as committed): MongoDB hits %s, MySQL %s.' % (
                b['file'], b.get('date'), parts[0], parts[1])]
        else:
            out += ['', 'Baseline of the c=1 goal: none (%s).' % b.get('why', '?')]
        return '\n'.join(out)

    def connection_goals(self):
        C = self.res.get('connections')
        if not C:
            return []
        R, G = C['runs'], []

        def run_at(key, lv):
            return R.get(key, {}).get(str(lv))

        for key, limit in (('mysql', 15), ('mongo', 25)):
            s, ceil = run_at(key, 32), run_at('ceiling', 32)
            if not s or not ceil:
                G.append({'met': None, 'text': 'issue 13: %s: module work at 32 connections: not measured' % key})
                continue
            us = s['nginx_us_per_req'] - ceil['nginx_us_per_req']
            G.append({'met': us <= limit, 'text': 'issue 13: %s%s, 32 connections: the module adds %.1f µs of worker '
                      'CPU per request (%.1f − %.1f µs of the ceiling at 32 connections), goal ≤ %d µs%s' % (
                          s['label'], ' (stand-in)' if key == 'mongo' else '', us, s['nginx_us_per_req'],
                          ceil['nginx_us_per_req'], limit,
                          ' ⚠ ' + '; '.join(s['problems']) if s['problems'] else '')})
        b = C.get('baseline') or {}
        sb = C.get('side_by_side') or {}
        for key in ('mongo', 'mysql'):
            s = run_at(key, 1)
            name = s['label'] if s else key
            base = b.get(key + '_c1_p50_ms')
            if sb.get(key):
                r = sb[key]
                G.append({'met': r['current_median'] <= r['baseline_median'],
                          'text': 'issue 13: %s at 1 connection, side by side with the baseline (%s): p50 %.3f '
                                  'against %.3f ms (medians of %d alternating rounds), %.2f×, goal: no worse%s' % (
                                      r['label'], sb['label'], r['current_median'], r['baseline_median'],
                                      sb['rounds'], r['current_median'] / r['baseline_median'],
                                      ' ⚠ ' + '; '.join(r['problems'][:2]) if r['problems'] else '')})
                continue
            if not s:
                G.append({'met': None, 'text': 'issue 13: %s at 1 connection: not measured' % name})
            elif base is None:
                G.append({'met': None, 'text': 'issue 13: %s at 1 connection: p50 %.3f ms; no baseline (%s)' % (
                    name, s['p50_ms'], ('`%s` has no c=1 p50 of it' % b['file']) if b.get('file')
                    else b.get('why', 'no earlier report'))})
            else:
                G.append({'met': s['p50_ms'] <= base, 'text': 'issue 13: %s at 1 connection: p50 %.3f ms against '
                          '%.3f ms in `%s` (%s, `%s`), %.2f×, goal: no worse%s' % (
                              name, s['p50_ms'], base, b['file'], b.get('date'), b[key + '_source'],
                              s['p50_ms'] / base, '; this is a --quick run (a smaller data set, shorter runs) '
                              'against a full one' if self.quick else '')})
        for key, r in sorted((sb.get('wide') or {}).items()):
            ratio = r['current_us_median'] / r['baseline_us_median']
            G.append({'met': ratio <= 1.10,
                      'text': 'issues 25/26: %s, %d connections, side by side with the baseline (%s): worker CPU '
                              '%.1f against %.1f µs per request (medians of %d alternating rounds), %.2f×, goal: '
                              'no more (≤ 1.10×, the noise of a round)%s' % (r['label'], sb['connections'], sb['label'],
                                                   r['current_us_median'], r['baseline_us_median'], sb['rounds'],
                                                   ratio, ' ⚠ ' + '; '.join(r['problems'][:2])
                                                   if r['problems'] else '')})
            if 'named_us_median' in r:
                nr = r['named_us_median'] / r['current_us_median']
                G.append({'met': nr <= 1.10,
                          'text': 'issue 26: %s, %d connections: the same backend written as a named backend '
                                  'costs %.1f against %.1f µs of worker CPU per request, %.2f×, goal: no more '
                                  '(≤ 1.10×)' % (r['label'], sb['connections'], r['named_us_median'],
                                              r['current_us_median'], nr)})
        for key in ('mysql', 'mongo'):
            s = run_at(key, 32)
            if not s:
                continue
            db, dbn = self.conn_db_us(key, s)
            ng = s['nginx_us_per_req']
            G.append({'met': bool(db) and ng < 0.5 * db,
                      'text': 'issue 13: %s, 32 connections: the nginx worker uses less than half the CPU per '
                              'request of the database server: %.1f against %.1f µs (%s), %.2f×, goal < 0.5×%s' % (
                                  s['label'], ng, db or 0, dbn, ng / db if db else 0,
                                  '; the stand-in is a Python server, a real mongod would spend a fraction of '
                                  'that, so this comparison flatters nginx' if key == 'mongo' else '')})
        return G

    def profile_md(self):
        P = self.res['profile']
        if 'error' in P:
            return '## Profile\n\nnot run: %s' % P['error']
        C = P['cases']
        out = ['## Profile (callgrind: instructions per request)', '',
               'nginx as a single process (`master_process off`) under `valgrind --tool=callgrind`, the '
               'same data and configuration; after a warm-up, %d requests per case, one at a time over one '
               'keep-alive connection; every thread counted (event loop and thread pool). Ir = '
               'instructions executed in user space (the kernel side — syscalls, context switches of the '
               'thread-pool hand-off — is not in these numbers; see the sys share in the results). The '
               'profiles: %s (`zcat F > f; callgrind_annotate --inclusive=yes f`).' % (
                   P['requests'], ', '.join('`%s`' % x for x in P.get('files', []))), '',
               '| case | Ir / request | over the static answer |', '|---|--:|--:|']
        base = C.get('static', {}).get('total_ir_per_req', 0)
        for name, c in C.items():
            out.append('| %s | %.0f | %s |' % (name, c['total_ir_per_req'],
                                               '—' if name == 'static' else '%.0f' % (c['total_ir_per_req'] - base)))
        libs = ('libjansson', 'libbson', 'libmongoc', 'libmariadb')
        named_libc = ('malloc', 'free', 'realloc', 'calloc', 'memalign', '__snprintf_chk', 'qsort')
        for name in ('microcache', 'mongo', 'fallback'):
            c = C.get(name)
            if not c:
                continue
            tot = c['total_ir_per_req']
            out += ['', '### %s: the module\'s functions and the library calls, inclusive' % name, '',
                    '| Ir / request | share | function | object |', '|--:|--:|---|---|']
            seen = set()
            k = 0
            for ir, fn, obj in c['inclusive']:
                if ir < 0.01 * tot or k >= (15 if name == 'microcache' else 40):
                    break
                keep = fn.startswith('ngx_http_bytemark') or fn in ('ngx_sha1_update',) \
                    or (any(obj.startswith(x) for x in libs) and not fn.startswith('0x')) \
                    or (obj.startswith('libc') and fn in named_libc)
                if keep and fn not in seen:
                    seen.add(fn)
                    out.append('| %.0f | %.0f%% | `%s` | %s |' % (ir, 100 * ir / tot, fn, obj))
                    k += 1
            out += ['', '### %s: self cost by object' % name, '', '| Ir / request | share | object |',
                    '|--:|--:|---|']
            for obj, ir in c['by_object'][:8]:
                out.append('| %.0f | %.0f%% | %s |' % (ir, 100 * ir / tot, obj))
        return '\n'.join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--quick', action='store_true', help='small data set, short runs (smoke test)')
    ap.add_argument('--no-profile', action='store_true', help='skip the callgrind profile')
    ap.add_argument('--workdir')
    ap.add_argument('--module')
    ap.add_argument('--nginx', default='/usr/sbin/nginx')
    ap.add_argument('--workers', type=int, default=1)
    ap.add_argument('--pool-threads', type=int, default=16)
    ap.add_argument('--connections', type=int, default=32)
    ap.add_argument('--wrk-threads', type=int, default=1)
    ap.add_argument('--conn-levels', default='1,32,256',
                    help='connection counts of the "Connections (issue 13)" runs (default 1,32,256; '
                         'wrk -t%%d with at most --wrk-threads threads)')
    ap.add_argument('--duration', type=int)
    ap.add_argument('--rounds', type=int, help='alternating rounds of the ceiling and the micro-cache '
                                               '(default 5, --quick 2), each 2/5 of --duration long')
    ap.add_argument('--warmup', type=int)
    ap.add_argument('--rows', type=int)
    ap.add_argument('--mongo-users', type=int)
    ap.add_argument('--ferretdb', default=FERRETDB, help='the FerretDB binary (default build/ferretdb/ferretdb)')
    ap.add_argument('--ferretdb-docs', type=int, default=10,
                    help='cache documents (users 1..N) loaded into FerretDB (default 10: each lookup scans them)')
    ap.add_argument('--quiet-cores', type=float, default=0.15,
                    help='other processes may use this many cores during a measurement (default 0.15)')
    ap.add_argument('--quiet-wait', type=float,
                    help='seconds, in all, to wait for other processes to leave the machine alone '
                         '(default 60, --quick 15)')
    ap.add_argument('--nice', type=int, default=-10 if os.geteuid() == 0 else 0,
                    help='niceness of the bench and of every server it starts (default -10 as root, so that '
                         'other work on the machine disturbs the measurements less; 0 to leave it)')
    ap.add_argument('--source-label', help='what to call the module source in the report')
    ap.add_argument('--render', metavar='JSON', help='only write the .md of an earlier run from its .json')
    ap.add_argument('--serve', action='store_true', help='(development) set up, then wait for SIGTERM')
    ap.add_argument('--profile-requests', type=int)
    ap.add_argument('--baseline-module', help='an earlier build of the module, measured side by side at c=1 '
                    '(bench/run.sh --baseline REV builds one)')
    ap.add_argument('--baseline-label', help='what to call the baseline in the report (e.g. its commit)')
    ap.add_argument('--baseline-rounds', type=int, default=3)
    ap.add_argument('--batch-rounds', type=int,
                    help='alternating rounds of the "MySQL coalescing (issue 27)" runs (default 3, --quick 2)')
    ap.add_argument('--replica-rounds', type=int,
                    help='alternating rounds of the "Replica reads (issue 26)" runs (default 3, --quick 2)')
    ap.add_argument('--only', choices=['mysql-batch', 'replica-reads', 'side-by-side'],
                    help='run one section alone and print it (a smoke test of that section)')
    ap.add_argument('--results-dir', default=os.path.join(ROOT, 'bench', 'results'))
    ap.add_argument('--out', help='result file (default: <results-dir>/<date>-<host>[-quick].md)')
    a = ap.parse_args()

    def on_signal(sig, frame):
        raise SystemExit(128 + sig)
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, on_signal)

    b = Bench(a)
    if a.render:
        if not a.workdir:
            shutil.rmtree(b.workdir, ignore_errors=True)
        # re-render a report from its .json (after changing the report code, say)
        with open(a.render) as fh:
            b.res = json.load(fh)
        b.quick = b.res['md_path'].endswith('-quick.md')
        c = b.res['config']
        b.duration, b.warmup = c['duration'], c['warmup']
        b.static_len = b.res.get('static_len') or int(round(b.res['answer_bytes']['mean']))
        b.mongo_users = b.res['load']['mongo_docs']
        b.res['md_path'] = a.render[:-5] + '.md'
        b.goals()
        b.report()
        print('rendered %s' % b.res['md_path'])
        return
    if a.nice:
        try:
            os.nice(a.nice)
        except OSError as e:
            b.res['notes'].append('could not renice to %d: %s' % (a.nice, e))
    b.res['nice'] = os.nice(0)
    try:
        os.makedirs(a.results_dir, exist_ok=True)
        b.machine()
        date = datetime.datetime.now().strftime('%Y-%m-%d')
        b.res['date'] = datetime.datetime.now().strftime('%Y-%m-%d %H:%M')
        b.res['md_path'] = a.out or os.path.join(
            a.results_dir, '%s-%s%s.md' % (date, b.res['machine']['host'], '-quick' if a.quick else ''))
        b.res['config'] = {'workers': a.workers, 'pool_threads': a.pool_threads, 'connections': a.connections,
                           'wrk_threads': a.wrk_threads, 'duration': b.duration, 'warmup': b.warmup,
                           'quiet_cores': a.quiet_cores}
        log('workdir %s, module %s' % (b.workdir, b.module))
        b.start_mongo()
        b.start_ferretdb()
        b.start_mysql()
        b.load()
        lens = [len(gen_user(u, 0)[0][2]) for u in range(1, 200)]
        b.res['payload_bytes'] = int(statistics.mean(lens))
        b.start_nginxes()
        b.res['static_len'] = b.static_len
        if a.serve:
            log('serving: nginx A on %d, nginx B on %d, MySQL %d, MongoDB %d; SIGTERM to stop'
                % (b.port_a, b.port_b, b.mysql_port, b.mongo_port))
            serving = {'a': b.port_a, 'b': b.port_b, 'mysql': b.mysql_port, 'mongo': b.mongo_port,
                       'nginx_a': b.nginx_a.pid, 'nginx_b': b.nginx_b.pid, 'mariadbd': b.mysqld.pid,
                       'standin': b.mongo.pid, 'mongo_users': b.mongo_users,
                       'mysql_users': b.mysql_users}
            if b.ferret:
                log('serving: nginx C on %d, FerretDB %d (users 1..%d)' % (b.port_c, b.ferret_port, b.ferret_docs))
                serving.update({'c': b.port_c, 'ferretdb_port': b.ferret_port, 'nginx_c': b.nginx_c.pid,
                                'ferretdb': b.ferret.pid, 'ferretdb_docs': b.ferret_docs})
            with open(os.path.join(b.workdir, 'serving'), 'w') as fh:
                json.dump(serving, fh)
            while True:
                time.sleep(3600)
        if a.only == 'side-by-side':
            if not b.nginx_a0:
                raise RuntimeError('--only side-by-side needs a baseline (bench/run.sh --baseline REV)')
            b.res['connections'] = {'levels': [], 'runs': {}, 'duration': b.duration, 'warmup': b.warmup,
                                    'c1_duration': b.c1_duration, 'baseline': {'why': 'not measured in this run'},
                                    'side_by_side': b.c1_side_by_side()}
            goals = [g for g in b.connection_goals() if 'side by side' in g['text'] or 'named backend' in g['text']]
            text = '\n'.join([b.connections_md(), '', '### Goals', ''] + [
                '- **%s** — %s' % ({True: 'met', False: 'NOT met', None: 'not measured'}[g['met']], g['text'])
                for g in goals])
            b.res['md_path'] = b.res['md_path'][:-3] + '-side-by-side.md'
            with open(b.res['md_path'], 'w') as fh:
                fh.write(text + '\n')
            with open(b.res['md_path'][:-3] + '.json', 'w') as fh:
                json.dump(b.res, fh, indent=1, default=str)
            print()
            print(text)
            log('results written to %s' % os.path.relpath(b.res['md_path'], os.getcwd()))
            return
        if a.only:
            if a.only == 'mysql-batch':
                mysql_batch.sweep(b)
                text = mysql_batch.md(b)
            else:
                replica_reads.sweep(b, replica_env())
                text = replica_reads.md(b)
            b.res['md_path'] = b.res['md_path'][:-3] + '-' + a.only + '.md'
            with open(b.res['md_path'], 'w') as fh:
                fh.write(text + '\n')
            with open(b.res['md_path'][:-3] + '.json', 'w') as fh:
                json.dump(b.res, fh, indent=1, default=str)
            print()
            print(text)
            log('results written to %s' % os.path.relpath(b.res['md_path'], os.getcwd()))
            return
        b.scenarios()
        if not a.no_profile:
            b.profile()
        b.goals()
        b.res['elapsed'] = '%.0f s from start to report (build not included)' % (time.time() - T0)
        text = b.report()
        with open(b.res['md_path'][:-3] + '.json', 'w') as fh:
            json.dump(b.res, fh, indent=1, default=str)
        print()
        print(text)
        print()
        log('results written to %s' % os.path.relpath(b.res['md_path'], os.getcwd()))
    finally:
        b.procs.stop_all()
        if not a.workdir:
            shutil.rmtree(b.workdir, ignore_errors=True)


if __name__ == '__main__':
    main()
