package Bytemark::Certs;

# Test certificates made with the openssl binary: a CA, a server certificate
# for localhost and 127.0.0.1 (subjectAltName) signed by it, a client
# certificate signed by it, and a second CA that signed none of them (the
# "wrong CA"). EC P-256 keys: quick to make. Valid for two days. Core Perl.
#
#   use Bytemark::Certs;
#   my $c = Bytemark::Certs::make("$dir/tls");
#   $c->{ca}, $c->{server_cert}, $c->{server_key}, $c->{client_cert},
#   $c->{client_key}, $c->{client_pem} (certificate and key in one file, as
#   mongo-c-driver's tlsCertificateKeyFile wants), $c->{other_ca},
#   $c->{server_dns_cert}, $c->{server_dns_key} (for the name db.test only)

use strict;
use warnings;

use Carp qw(croak);
use File::Path qw(make_path);

sub _openssl {
    my @cmd = ('openssl', @_);
    my $out = qx{@{[ join ' ', map { "'$_'" } @cmd ]} 2>&1};
    croak "openssl @_ failed ($?):\n$out" if $?;
    return $out;
}

sub _spew {
    my ($file, $text) = @_;
    open my $fh, '>', $file or croak "$file: $!";
    print {$fh} $text;
    close $fh or croak "$file: $!";
}

sub _slurp {
    my $file = shift;
    open my $fh, '<', $file or croak "$file: $!";
    local $/;
    return scalar <$fh>;
}

my @EC = ('-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes');

sub _ca {
    my ($dir, $name, $cn) = @_;
    _openssl('req', '-x509', @EC, '-keyout', "$dir/$name.key", '-out', "$dir/$name.pem",
             '-days', '2', '-subj', "/CN=$cn",
             '-addext', 'basicConstraints=critical,CA:TRUE',
             '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
}

# a key and a certificate signed by the CA, with the extensions given
sub _leaf {
    my ($dir, $name, $cn, $ext) = @_;
    _spew("$dir/$name.ext", $ext);
    _openssl('req', @EC, '-keyout', "$dir/$name.key", '-out', "$dir/$name.csr",
             '-subj', "/CN=$cn");
    _openssl('x509', '-req', '-in', "$dir/$name.csr", '-CA', "$dir/ca.pem",
             '-CAkey', "$dir/ca.key", '-set_serial', int(rand(1e9)) + 1,
             '-days', '2', '-out', "$dir/$name.pem", '-extfile', "$dir/$name.ext");
}

sub make {
    my $dir = shift;
    make_path($dir);
    _ca($dir, 'ca', 'Bytemark Test CA');
    _ca($dir, 'other-ca', 'Some Other CA');
    _leaf($dir, 'server', 'localhost',
          "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        . "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n");
    # a name only, not the address: the name the client checks is not the
    # address it connects to
    _leaf($dir, 'server-dns', 'db.test',
          "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        . "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:db.test\n");
    _leaf($dir, 'client', 'bytemark-client',
          "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        . "extendedKeyUsage=clientAuth\n");
    _spew("$dir/client-both.pem", _slurp("$dir/client.pem") . _slurp("$dir/client.key"));
    chmod 0600, glob("$dir/*.key");
    return {
        dir         => $dir,
        ca          => "$dir/ca.pem",
        other_ca    => "$dir/other-ca.pem",
        server_cert => "$dir/server.pem",
        server_key  => "$dir/server.key",
        server_dns_cert => "$dir/server-dns.pem",
        server_dns_key  => "$dir/server-dns.key",
        client_cert => "$dir/client.pem",
        client_key  => "$dir/client.key",
        client_pem  => "$dir/client-both.pem",
    };
}

1;
