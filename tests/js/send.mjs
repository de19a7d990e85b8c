// Sends one span, one log record and one counter to an OTLP/HTTP endpoint with the OpenTelemetry JavaScript
// SDK's own OTLP/HTTP (JSON) exporters. Usage: node send.mjs <base url, e.g. http://127.0.0.1:4318> <service>
import { SpanKind, SpanStatusCode, diag, DiagConsoleLogger, DiagLogLevel } from '@opentelemetry/api';
import { SeverityNumber } from '@opentelemetry/api-logs';
import { OTLPLogExporter } from '@opentelemetry/exporter-logs-otlp-http';
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-http';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { LoggerProvider, SimpleLogRecordProcessor } from '@opentelemetry/sdk-logs';
import { MeterProvider, PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics';
import { BasicTracerProvider, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';

const [base, service] = process.argv.slice(2);
diag.setLogger(new DiagConsoleLogger(), DiagLogLevel.WARN);
const resource = resourceFromAttributes({ 'service.name': service });

const tracerProvider = new BasicTracerProvider({
  resource,
  spanProcessors: [new SimpleSpanProcessor(new OTLPTraceExporter({ url: `${base}/v1/traces` }))],
});
const span = tracerProvider.getTracer('js.tracer', '1.2.3').startSpan('chat gpt-4o', {
  kind: SpanKind.CLIENT,
  attributes: {
    'gen_ai.request.model': 'gpt-4o',
    'gen_ai.usage.input_tokens': 12,
    'gen_ai.request.temperature': 0.5,
    'gen_ai.request.stream': true,
    'gen_ai.response.finish_reasons': ['stop'],
  },
});
span.addEvent('gen_ai.choice', { index: 0 });
span.setStatus({ code: SpanStatusCode.ERROR, message: 'boom' });
span.end();
await tracerProvider.forceFlush();
await tracerProvider.shutdown();

const loggerProvider = new LoggerProvider({
  resource,
  processors: [new SimpleLogRecordProcessor({ exporter: new OTLPLogExporter({ url: `${base}/v1/logs` }) })],
});
loggerProvider.getLogger('js.logger').emit({
  severityNumber: SeverityNumber.INFO, severityText: 'INFO', body: 'hello from js', attributes: { k: 'v' },
});
await loggerProvider.forceFlush();
await loggerProvider.shutdown();

const reader = new PeriodicExportingMetricReader({
  exporter: new OTLPMetricExporter({ url: `${base}/v1/metrics` }), exportIntervalMillis: 60000,
});
const meterProvider = new MeterProvider({ resource, readers: [reader] });
meterProvider.getMeter('js.meter').createCounter('js.requests').add(2, { model: 'gpt-4o' });
await meterProvider.shutdown(); // collects and exports once
