#!/usr/bin/env node
// Validates Adaptive Cards with Microsoft's own parser (the `adaptivecards` npm package).
//
// Input on stdin: a JSON object {"name": card, ...}. Output on stdout: a JSON object
// {"name": [problem, ...], ...} listing only the cards with problems, and exit code 0.
// A problem is anything the parser reports while reading the card against schema 1.5
// (unknown element or action types, invalid property values), anything validateProperties()
// finds (duplicate ids, empty collections, missing required values), a property the parser
// dropped because it does not know it, or a card that does not declare version 1.5.
"use strict";

const path = require("path");
const AC = require(path.join(__dirname, "node", "node_modules", "adaptivecards", "dist", "adaptivecards.js"));

const VERSION = "1.5";
// Free-form values the parser keeps as they are: nothing inside them is a card property.
const OPAQUE_KEYS = new Set(["data"]);

function droppedKeys(input, output, where, problems) {
  if (Array.isArray(input)) {
    input.forEach((child, i) => droppedKeys(child, Array.isArray(output) ? output[i] : undefined,
      `${where}[${i}]`, problems));
    return;
  }
  if (input === null || typeof input !== "object") {
    return;
  }
  for (const key of Object.keys(input)) {
    if (output === null || typeof output !== "object" || !(key in output)) {
      problems.push(`${where}.${key}: property not recognised by the Adaptive Cards ${VERSION} parser`);
    } else if (!OPAQUE_KEYS.has(key)) {
      droppedKeys(input[key], output[key], `${where}.${key}`, problems);
    }
  }
}

function validate(json) {
  const problems = [];
  if (json === null || typeof json !== "object" || json.type !== "AdaptiveCard") {
    return ["not an AdaptiveCard"];
  }
  if (json.version !== VERSION) {
    problems.push(`version is ${JSON.stringify(json.version)}, expected "${VERSION}"`);
  }
  const context = new AC.SerializationContext(AC.Versions.v1_5);
  const card = new AC.AdaptiveCard();
  card.parse(json, context);
  for (let i = 0; i < context.eventCount; i++) {
    const event = context.getEventAt(i);
    problems.push(`parse: ${AC.ValidationEvent[event.event]}: ${event.message}`);
  }
  const result = card.validateProperties();
  for (const event of result.validationEvents) {
    problems.push(`validate: ${AC.ValidationEvent[event.event]}: ${event.message}`);
  }
  droppedKeys(json, card.toJSON(new AC.SerializationContext(AC.Versions.v1_5)), "card", problems);
  return problems;
}

function main() {
  const chunks = [];
  process.stdin.on("data", (chunk) => chunks.push(chunk));
  process.stdin.on("end", () => {
    const cards = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    const failures = {};
    for (const [name, json] of Object.entries(cards)) {
      let problems;
      try {
        problems = validate(json);
      } catch (error) {
        problems = [`parser crashed: ${error && error.message}`];
      }
      if (problems.length) {
        failures[name] = problems;
      }
    }
    process.stdout.write(JSON.stringify(failures));
  });
}

main();
