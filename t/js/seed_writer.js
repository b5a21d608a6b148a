#!/usr/bin/env node
'use strict';
// Writes one cache entry exactly the way the seed model (seeds/BytemarkTickets.md) does:
// the Mongoose model BytemarkTickets on collection bytemark_tickets_cache, non-strict
// schema with the seed's fields, and the seed's findOneAndUpdate upsert.
//
//   node t/js/seed_writer.js <mongodb-uri> <db> <user_id> <pass-json>
//
// Prints one JSON line {"ok":true,"user_id":…,"timestamp":…} on success; exits 1 on error.
// Note what Mongoose itself adds, as the seed application would: an `_id` ObjectId in every
// pushed pass (the passes array is an array of sub-schemas) and `__v: 0` on insert.

const mongoose = require('mongoose');

function usage(msg) {
  process.stderr.write(`${msg}\nusage: node seed_writer.js <mongodb-uri> <db> <user_id> <pass-json>\n`);
  process.exit(2);
}

// The schema, field by field as in the seed's table.
const bytemarkTicketsSchema = new mongoose.Schema({
  user_id: { type: Number },
  timestamp: { type: Number },
  passes: [{
    pass_uuid: { type: String },
    timestamp: { type: Number },
    status: { type: String },
    free_ticket_status: { type: Number },
    payload: { type: mongoose.Schema.Types.Mixed },
    payload_hash: { type: String },
  }],
  passes4: { type: Array },
  passesLog: [{
    server_time: { type: String },
    data: { type: Object },
  }],
  passes4Log: { type: Array },
}, { strict: false, collection: 'bytemark_tickets_cache' });

async function main() {
  const [uri, dbName, userIdArg, passJson] = process.argv.slice(2);
  if (!uri || !dbName || !userIdArg || passJson === undefined) usage('missing arguments');
  const user_id = Number(userIdArg);
  if (!Number.isSafeInteger(user_id)) usage(`bad user_id: ${userIdArg}`);
  let newPass;
  try {
    newPass = JSON.parse(passJson);
  } catch (e) {
    usage(`bad pass JSON: ${e.message}`);
  }

  // The seed uses its own 'cache' connection, hence createConnection.
  const conn = mongoose.createConnection(uri, { dbName, serverSelectionTimeoutMS: 5000 });
  try {
    await conn.asPromise();
    const BytemarkTickets = conn.model('BytemarkTickets', bytemarkTicketsSchema);
    const timestamp = Date.now();
    // The seed's update, verbatim (Date.now() captured once so it can be reported).
    await BytemarkTickets.findOneAndUpdate(
      { user_id },
      {
        $push: { passes: newPass },
        timestamp,
      },
      { upsert: true },
    );
    process.stdout.write(JSON.stringify({ ok: true, user_id, timestamp }) + '\n');
  } finally {
    await conn.close();
  }
}

main().catch((err) => {
  process.stderr.write(`seed_writer: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
