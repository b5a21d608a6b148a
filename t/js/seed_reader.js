#!/usr/bin/env node
'use strict';
// Reads a user's cache entry with the plain MongoDB driver, as a client of the cache would.
//
//   node t/js/seed_reader.js <mongodb-uri> <db> <user_id> [--canonical]
//
// Prints the document as one line of Extended JSON: relaxed by default (plain numbers),
// canonical with --canonical, which keeps BSON types visible ({"$numberInt": "5"},
// {"$numberLong": …}, {"$numberDouble": …}). Prints `null` if there is no entry.
// Exits 1 on error.

const { MongoClient, BSON } = require('mongodb');

async function main() {
  const args = process.argv.slice(2);
  const canonical = args.includes('--canonical');
  const [uri, dbName, userIdArg] = args.filter((a) => a !== '--canonical');
  if (!uri || !dbName || !userIdArg) {
    process.stderr.write('usage: node seed_reader.js <mongodb-uri> <db> <user_id> [--canonical]\n');
    process.exit(2);
  }
  const user_id = Number(userIdArg);
  if (!Number.isSafeInteger(user_id)) {
    process.stderr.write(`bad user_id: ${userIdArg}\n`);
    process.exit(2);
  }
  const client = new MongoClient(uri, { serverSelectionTimeoutMS: 5000 });
  try {
    await client.connect();
    const coll = client.db(dbName).collection('bytemark_tickets_cache');
    // promoteValues:false keeps Int32/Long/Double wrappers so canonical EJSON shows the types.
    const doc = await coll.findOne({ user_id }, canonical ? { promoteValues: false } : {});
    process.stdout.write(BSON.EJSON.stringify(doc, { relaxed: !canonical }) + '\n');
  } finally {
    await client.close();
  }
}

main().catch((err) => {
  process.stderr.write(`seed_reader: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
