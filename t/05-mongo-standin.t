#!/usr/bin/perl
# The MongoDB stand-in keeps MongoDB's semantics: its own checks (pymongo and
# raw wire-protocol clients, tools/test_mongo_standin.py) run with the suite.

use strict;
use warnings;

use Test::More;
use lib 't/lib';
use Bytemark::Test;

my $out = `/usr/bin/python3 $Bytemark::Test::REPO/tools/test_mongo_standin.py 2>&1`;
is $?, 0, 'tools/test_mongo_standin.py passes' or diag $out;
like $out, qr/^OK/m, 'unittest reports OK';

done_testing;
