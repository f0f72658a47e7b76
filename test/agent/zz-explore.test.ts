import { test } from "node:test";
import { startAgent } from "../support/agent-process.js";
import { startMxWorld, worldConfig, submit } from "../support/mx-world.js";
test("explore", async () => {
  const world = await startMxWorld(["mx1.example.org", "mx2.example.org"]);
  world.setZone({ "example.org": { MX: [{ exchange: "mx1.example.org", preference: 10 }] }, "nullmx.example": { MX: [{ exchange: ".", preference: 0 }] } });
  const agent = await startAgent(worldConfig(world));
  const t0 = Date.now();
  const id = await submit(agent, "alice@home.example.net", ["bob@example.org", "x@nullmx.example"], "hello");
  await agent.waitForLog(new RegExp(`${id}: removed`));
  console.log(Date.now() - t0);
  console.log(agent.log());
  console.log(world.host("mx1.example.org").messages);
  await agent.cleanup(); await world.close();
});
