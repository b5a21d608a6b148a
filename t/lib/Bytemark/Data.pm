package Bytemark::Data;

# Test data and configuration shared by the read-path tests: pass rows in
# MySQL, cache entries in MongoDB, and the standard http{} body.

use strict;
use warnings;

use Exporter 'import';
use JSON::PP;
use Time::HiRes qw(time sleep);

our @EXPORT_OK = qw(uuid add_pass pass_row cache_entry body_both wait_until
                    now_ms);

my $JSON = JSON::PP->new->utf8->canonical;

sub now_ms { int(time * 1000) }

# A canonical, lower-case uuid numbered $n (distinct per $n).
sub uuid {
    my ($n) = @_;
    return sprintf('%08x-0000-4000-8000-%012x', $n, $n);
}

# The pass object MySQL gives for the row add_pass() writes with %p.
sub pass_row {
    my (%p) = @_;
    return {
        pass_uuid          => $p{uuid},
        timestamp          => $p{ts} // 1732000000000,
        status             => $p{status} // 'active',
        free_ticket_status => $p{free} // 0,
        payload            => exists $p{payload} ? $p{payload} : { fare => 275 },
        payload_hash       => exists $p{hash} ? $p{hash} : ('ab' x 32),
    };
}

# add_pass($t, user => N, uuid => ..., version => 3|4, status => ..., ts => ...,
#          payload => perl value | undef, payload_raw => 'text', hash => ...)
sub add_pass {
    my ($t, %p) = @_;
    my $row = pass_row(%p);
    my $payload = exists $p{payload_raw} ? $p{payload_raw}
                : defined $row->{payload} ? $JSON->encode($row->{payload})
                : undef;
    my @v = (
        $p{user},
        _q($row->{pass_uuid}),
        $p{version} // 3,
        _q($row->{status}),
        $row->{free_ticket_status},
        defined $payload ? _q($payload) : 'NULL',
        defined $row->{payload_hash} ? _q($row->{payload_hash}) : 'NULL',
        $row->{timestamp},
    );
    $t->sql('INSERT INTO bytemark_pass (user_id, pass_uuid, version, status, '
            . 'free_ticket_status, payload, payload_hash, timestamp) VALUES ('
            . join(', ', @v) . ')');
    return $row;
}

sub _q {
    my ($s) = @_;
    $s =~ s/\\/\\\\/g;
    $s =~ s/'/\\'/g;
    return "'$s'";
}

# A cache document for user $user (int64 user_id, int64 timestamp).
sub cache_entry {
    my ($user, %p) = @_;
    return {
        user_id   => { '$numberLong' => "$user" },
        timestamp => { '$numberLong' => '' . ($p{ts} // now_ms()) },
        passes    => $p{passes} // [],
        passes4   => $p{passes4} // [],
        %{ $p{extra} // {} },
    };
}

# The http{} body with both backends (unless no_mongo/no_mysql) and the
# standard locations: /t (tickets), /users/N/passes/UUID (pass), /static.
sub body_both {
    my (%o) = @_;
    my $http = $o{http} // '';
    my $loc  = $o{loc} // '';
    my $backends = '';
    $backends .= "bytemark_mongo_uri %%MONGO_URI%%;\n"
               . "bytemark_mongo_collection %%MONGO_COLL%%;\n" unless $o{no_mongo};
    $backends .= "bytemark_mysql %%MYSQL%%;\n" unless $o{no_mysql};
    return $backends . $http . "
server {
    listen 127.0.0.1:%%PORT%%;
    location = /t {
        bytemark_user_id \$arg_user_id;
        bytemark_tickets;
        $loc
    }
    location ~ ^/users/([^/]*)/passes/([^/]*)\$ {
        bytemark_user_id \$1;
        bytemark_pass_uuid \$2;
        bytemark_pass;
        $loc
    }
    location = /static {
        return 200 \"static ok\\n\";
    }
}
";
}

# Polls $cond every 50 ms for up to $secs; returns its last value.
sub wait_until {
    my ($cond, $secs) = @_;
    my $end = time + ($secs // 5);
    my $v;
    while (1) {
        $v = $cond->();
        return $v if $v || time > $end;
        sleep 0.05;
    }
}

1;
