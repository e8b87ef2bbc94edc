// Two kafkajs consumers join one group; once both hold partitions, a kafkajs
// producer writes `count` records, which the two must consume once between
// them with auto-commit. Prints a JSON summary for tests/test_group_kafkajs.py.
// Usage: node group_consumers.js <bootstrap> <topic> <group> <count>
const { Kafka, logLevel } = require("kafkajs");

async function main() {
  const [bootstrap, topic, group, countArg] = process.argv.slice(2);
  const count = Number(countArg);
  const kafka = new Kafka({ clientId: "sluice-kafkajs", brokers: [bootstrap], logLevel: logLevel.WARN });
  const seen = [];
  const byMember = {};
  const assigned = {};
  const consumers = [];
  for (const name of ["a", "b"]) {
    const c = kafka.consumer({ groupId: group, sessionTimeout: 6000, heartbeatInterval: 500, maxWaitTimeInMs: 500 });
    c.on(c.events.GROUP_JOIN, (e) => {
      assigned[name] = (e.payload.memberAssignment[topic] || []).slice().sort();
    });
    await c.connect();
    await c.subscribe({ topic, fromBeginning: true });
    byMember[name] = new Set();
    await c.run({
      autoCommit: true,
      eachMessage: async ({ partition, message }) => {
        seen.push(Number(message.value.toString()));
        byMember[name].add(partition);
      },
    });
    consumers.push(c);
  }
  // Produce only once both members hold part of the topic.
  const joinDeadline = Date.now() + 30000;
  while (Date.now() < joinDeadline &&
         !((assigned.a || []).length > 0 && (assigned.b || []).length > 0)) {
    await new Promise((r) => setTimeout(r, 100));
  }
  const producer = kafka.producer();
  await producer.connect();
  const messages = [];
  for (let i = 0; i < count; i++) messages.push({ key: `k${i}`, value: `${i}` });
  await producer.send({ topic, messages });
  await producer.disconnect();
  const deadline = Date.now() + 40000;
  while (seen.length < count && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
  }
  // Let the auto-commit of the last batch go out before leaving.
  await new Promise((r) => setTimeout(r, 500));
  const admin = kafka.admin();
  await admin.connect();
  for (const c of consumers) await c.disconnect();
  const offsets = await admin.fetchOffsets({ groupId: group, topics: [topic] });
  await admin.disconnect();
  const committed = offsets[0].partitions.reduce((s, p) => s + Math.max(0, Number(p.offset)), 0);
  console.log(JSON.stringify({
    seen: seen.length,
    unique: new Set(seen).size,
    assigned,
    partitions: Object.fromEntries(Object.entries(byMember).map(([k, v]) => [k, [...v].sort()])),
    committed,
  }));
}

main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
