/**
 * Training curves (issue 22): loss.svg draws the chance line ln(batch) with its label, and `loss` and `InfoNCE`
 * with distinct strokes (with a small lambda the two nearly coincide: a shared stroke hides one under the other);
 * the AMI term has its own panel and scale.
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { compile } from 'vega-lite';
import { chanceInfoNCE, lossChartSpec, renderSvg, type Point } from '../src/train/plots.js';
import { writeCurves } from '../src/train/trainer.js';
import { testTempDir } from './helpers.js';

const TMP = testTempDir('plots');

/** 20 steps whose loss is InfoNCE + 1e-3 * AMI, as in a miCSE run with lambda 1e-3. */
function points(): Point[] {
  return Array.from({ length: 20 }, (_, i) => {
    const infoNCE = 3.6 - 0.1 * i;
    const ami = -0.1 - 0.01 * i;
    return [
      { step: i + 1, value: infoNCE + 1e-3 * ami, series: 'loss' },
      { step: i + 1, value: infoNCE, series: 'InfoNCE' },
      { step: i + 1, value: ami, series: 'AMI' },
    ];
  }).flat();
}

/** Every mark of a compiled Vega spec, nested groups included. */
function marks(spec: unknown): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  const walk = (node: unknown): void => {
    if (Array.isArray(node)) node.forEach(walk);
    else if (node !== null && typeof node === 'object') {
      const o = node as Record<string, unknown>;
      if (typeof o['type'] === 'string' && o['encode'] !== undefined) out.push(o);
      Object.values(o).forEach(walk);
    }
  };
  walk(spec);
  return out;
}

describe('loss.svg', () => {
  it('draws the chance line ln(batch), labelled, inside the y range', async () => {
    assert.equal(chanceInfoNCE(32), Math.log(32));
    const spec = lossChartSpec(points(), 32);
    const vega = compile(spec).spec;
    const rules = marks(vega).filter((m) => m['type'] === 'rule');
    assert.equal(rules.length, 1, 'one chance rule');
    const json = JSON.stringify(spec);
    assert.match(json, /"value":3\.4657359027997265/, 'the rule sits at ln(32)');
    const svg = await renderSvg(spec);
    assert.match(svg, /chance: ln\(32\) = 3\.47/);
  });

  it('loss and InfoNCE have distinct strokes; AMI has its own panel', async () => {
    const spec = lossChartSpec(points(), 32);
    const vega = compile(spec).spec;
    const lines = marks(vega).filter((m) => m['type'] === 'line');
    assert.equal(lines.length, 3, 'loss, InfoNCE, AMI');
    const svg = await renderSvg(spec);
    const dashes = new Set([...svg.matchAll(/<path[^>]*stroke-dasharray="([^"]*)"[^>]*>/g)].map((m) => m[1]));
    assert.ok(dashes.has('6,4'), `InfoNCE is dashed (dash arrays in the SVG: ${[...dashes].join(' | ')})`);
    const widths = new Set([...svg.matchAll(/stroke-width="([^"]*)"/g)].map((m) => m[1]));
    assert.ok(widths.has('3') && widths.has('1.5'), `loss is wide and InfoNCE narrow (stroke widths: ${[...widths].join(', ')})`);
    assert.ok('vconcat' in spec && spec.vconcat.length === 2, 'AMI in a second panel');
    assert.match(svg, />AMI</);
    const noAmi = lossChartSpec(points().filter((p) => p.series !== 'AMI'), 32);
    assert.ok('vconcat' in noAmi && noAmi.vconcat.length === 1, 'SimCSE runs: one panel');
  });

  it('writeCurves: the chance line of the run batch in loss.svg; the step-0 STS-B dev point in stsb-dev.svg', async () => {
    const dir = await fs.mkdtemp(path.join(TMP, 'curves-'));
    const lines = [
      { step: 0, epoch: 0, stsbDev: 40, best: false },
      ...points().filter((p) => p.series === 'InfoNCE').map((p) => ({ step: p.step, epoch: 0, loss: p.value, infoNCE: p.value, ami: -0.1, lr: 1e-3, gradNorm: 1, sentencesPerSecond: 1 })),
      { step: 20, epoch: 0, stsbDev: 45, best: true },
    ];
    await fs.writeFile(path.join(dir, 'metrics.jsonl'), lines.map((l) => JSON.stringify(l) + '\n').join(''));
    assert.deepEqual(await writeCurves(dir, 16), ['loss.svg', 'stsb-dev.svg']);
    assert.match(await fs.readFile(path.join(dir, 'loss.svg'), 'utf8'), /chance: ln\(16\) = 2\.77/);
    const dev = await fs.readFile(path.join(dir, 'stsb-dev.svg'), 'utf8');
    assert.match(dev, /aria-label="step: 0; Spearman x 100: 40;/, 'the step-0 point is drawn');
    assert.match(dev, /aria-label="step: 20; Spearman x 100: 45;/);
  });
});
