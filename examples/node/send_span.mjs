// A non-Python service joining llmtap: the OpenTelemetry JavaScript SDK sends one GenAI span over OTLP/HTTP.
// Usage: node examples/node/send_span.mjs [http://127.0.0.1:4318]   (after `npm install` in examples/node)
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BasicTracerProvider, BatchSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { SpanKind, SpanStatusCode } from "@opentelemetry/api";

const endpoint = process.argv[2] ?? process.env.OTEL_EXPORTER_OTLP_ENDPOINT ?? "http://127.0.0.1:4318";
const provider = new BasicTracerProvider({
  resource: resourceFromAttributes({ "service.name": "node-chatbot", "service.namespace": "examples" }),
  spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url: `${endpoint}/v1/traces` }))],
});
const tracer = provider.getTracer("node-chatbot", "1.0.0");

const span = tracer.startSpan("chat gpt-4o-mini", {
  kind: SpanKind.CLIENT,
  attributes: {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.input.messages": JSON.stringify([{ role: "user", parts: [{ type: "text", content: "Hello from Node" }] }]),
  },
});
span.setAttributes({
  "gen_ai.response.model": "gpt-4o-mini",
  "gen_ai.response.finish_reasons": ["stop"],
  "gen_ai.usage.input_tokens": 4,
  "gen_ai.usage.output_tokens": 6,
  "gen_ai.output.messages": JSON.stringify([
    { role: "assistant", parts: [{ type: "text", content: "Hello, Node!" }], finish_reason: "stop" },
  ]),
  "user.id": "node-user",
});
span.setStatus({ code: SpanStatusCode.OK });
span.end();
await provider.shutdown();
console.log(`sent one span to ${endpoint}`);
