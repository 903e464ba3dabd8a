/**
 * Training curves as SVG through Vega-Lite (compiled to Vega and rendered headless by vega's own SVG renderer;
 * no canvas, no browser). Vega and Vega-Lite are loaded by the first render, so that what imports the chart specs
 * (the trainer) starts without them.
 */
import type { TopLevelSpec } from 'vega-lite';

/** The Vega-Lite schema every chart of the project declares, and the charts' width in pixels. */
export const VEGA_LITE_SCHEMA = 'https://vega.github.io/schema/vega-lite/v5.json';
export const CHART_WIDTH = 560;

/** Renders a Vega-Lite spec to an SVG string. */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const vega = await import('vega');
  const { compile } = await import('vega-lite');
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

export interface Point {
  step: number;
  value: number;
  series: string;
}

/** A line chart of `value` against `step`, one line per `series`. */
export function lineChartSpec(title: string, yTitle: string, points: Point[]): TopLevelSpec {
  return {
    $schema: VEGA_LITE_SCHEMA,
    title,
    width: CHART_WIDTH,
    height: 300,
    data: { values: points },
    mark: { type: 'line', point: points.length <= 60 },
    encoding: {
      x: { field: 'step', type: 'quantitative', title: 'step' },
      y: { field: 'value', type: 'quantitative', title: yTitle, scale: { zero: false } },
      color: { field: 'series', type: 'nominal', title: null },
    },
  };
}

/** One panel of a vertically concatenated chart, and one layer of a layered panel. */
type Panel = Extract<TopLevelSpec, { vconcat: unknown }>['vconcat'][number];
type Layer = Extract<Panel, { layer: unknown }>['layer'][number];

/** The series of loss.svg's upper panel, in drawing order, with their strokes: `loss` wide and solid under
 * `InfoNCE` narrow and dashed (with a small lambda the two nearly coincide, and each stays visible). */
const LOSS_SERIES = [
  { series: 'loss', color: '#4c78a8', dash: [1, 0], width: 3 },
  { series: 'InfoNCE', color: '#f58518', dash: [6, 4], width: 1.5 },
];
const AMI_SERIES = 'AMI';

/** The InfoNCE value of a batch of `batchSize` sentences whose embeddings are all equal: ln(batchSize). */
export function chanceInfoNCE(batchSize: number): number {
  return Math.log(batchSize);
}

/**
 * loss.svg: `loss` and `InfoNCE` against step with the chance line ln(batch) (the InfoNCE of a collapsed encoder,
 * every sentence the same vector), and the AMI term, on its own scale, in a second panel when there is one.
 */
export function lossChartSpec(points: Point[], batchSize: number): TopLevelSpec {
  const chance = chanceInfoNCE(batchSize);
  const x = { field: 'step', type: 'quantitative', title: 'step' } as const;
  const y = { field: 'value', type: 'quantitative', title: 'loss', scale: { zero: false } } as const;
  const domain = LOSS_SERIES.map((s) => s.series);
  const lines: Layer[] = LOSS_SERIES.map((s) => ({
    data: { values: points.filter((p) => p.series === s.series) },
    mark: { type: 'line', strokeWidth: s.width, strokeDash: s.dash },
    encoding: {
      x, y,
      color: { field: 'series', type: 'nominal', title: null, scale: { domain, range: LOSS_SERIES.map((t) => t.color) } },
      strokeDash: { field: 'series', type: 'nominal', title: null, scale: { domain, range: LOSS_SERIES.map((t) => t.dash) } },
    },
  }));
  const lossPanel: Panel = {
    width: CHART_WIDTH,
    height: 280,
    layer: [
      ...lines,
      { data: { values: [{ value: chance }] }, mark: { type: 'rule', color: 'gray', strokeDash: [2, 2] }, encoding: { y } },
      {
        data: { values: [{ value: chance, label: `chance: ln(${batchSize}) = ${chance.toFixed(2)}` }] },
        mark: { type: 'text', color: 'gray', align: 'right', baseline: 'bottom', dy: -2 },
        encoding: { x: { value: CHART_WIDTH }, y, text: { field: 'label' } },
      },
    ],
  };
  const ami = points.filter((p) => p.series === AMI_SERIES);
  const amiPanel: Panel = {
    width: CHART_WIDTH,
    height: 140,
    data: { values: ami },
    mark: { type: 'line', color: '#54a24b' },
    encoding: { x, y: { field: 'value', type: 'quantitative', title: 'AMI', scale: { zero: false } } },
  };
  return { $schema: VEGA_LITE_SCHEMA, title: 'Training loss', vconcat: ami.length > 0 ? [lossPanel, amiPanel] : [lossPanel] };
}
