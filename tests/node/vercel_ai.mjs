// The Vercel AI SDK's default OpenAI model (`openai('model')`, which calls the Responses API)
// against the relay: generateText, then streamText. Prints one JSON line with what each got.
// Usage: node vercel_ai.mjs <relay base URL ending in /v1> <key> <model>
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, streamText } from "ai";

const [baseURL, apiKey, model] = process.argv.slice(2);
const openai = createOpenAI({ baseURL, apiKey });

const generated = await generateText({ model: openai(model), prompt: "Say hello", maxRetries: 0 });

const streamed = streamText({ model: openai(model), prompt: "Say hello again", maxRetries: 0 });
const parts = [];
for await (const delta of streamed.textStream) parts.push(delta);

console.log(
  JSON.stringify({
    generate: { text: generated.text, usage: generated.usage, finishReason: generated.finishReason },
    stream: {
      text: parts.join(""),
      deltas: parts.length,
      usage: await streamed.usage,
      finishReason: await streamed.finishReason,
    },
  }),
);
