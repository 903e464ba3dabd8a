/** Metrics of the STS protocol against values computed by hand (shown in the comments). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { averageRanks, cosine, mean, pearson, spearman } from '../eval/metrics.js';

/** Agreement expected of float64 arithmetic on these small inputs. */
const TOL = 1e-12;

function close(actual: number, expected: number, tol = TOL): void {
  assert.ok(Math.abs(actual - expected) <= tol, `expected ${expected}, got ${actual}`);
}

test('mean', () => {
  close(mean([1, 2, 3, 4]), 2.5);
});

test('pearson: perfect, partial and anti-correlation', () => {
  close(pearson([1, 2, 3, 4, 5], [2, 4, 6, 8, 10]), 1);
  close(pearson([1, 2, 3], [3, 2, 1]), -1);
  // dx = [-1, 0, 1], dy = [-1, 1, 0]: sxy = 1, sxx = syy = 2 -> 0.5
  close(pearson([1, 2, 3], [1, 3, 2]), 0.5);
  // mx = 2.5, my = 2.75: sxy = 5.5, sxx = 5, syy = 8.75 -> 5.5 / sqrt(43.75)
  close(pearson([1, 2, 3, 4], [1, 3, 2, 5]), 5.5 / Math.sqrt(43.75));
  // invariant to affine maps of either sample
  close(pearson([10, 20, 30, 40], [-1, -3, -2, -5]), -5.5 / Math.sqrt(43.75));
});

test('pearson: a constant sample has no correlation (NaN, like scipy)', () => {
  assert.ok(Number.isNaN(pearson([1, 1, 1], [1, 2, 3])));
});

test('pearson/spearman: unpaired or too short samples are rejected', () => {
  assert.throws(() => pearson([1, 2], [1, 2, 3]), /length/);
  assert.throws(() => spearman([1], [1]), /at least 2/);
});

test('averageRanks: ties share the average of their ranks', () => {
  assert.deepEqual([...averageRanks([10, 20, 20, 30])], [1, 2.5, 2.5, 4]);
  // the three 3s take ranks 2, 3, 4 -> 3
  assert.deepEqual([...averageRanks([3, 1, 3, 3])], [3, 1, 3, 3]);
  assert.deepEqual([...averageRanks([0.5, -2, Infinity, -Infinity])], [3, 2, 4, 1]);
});

test('spearman: monotone maps give +-1', () => {
  close(spearman([1, 2, 3, 4, 5], [1, 4, 9, 16, 25]), 1);
  close(spearman([1, 2, 3, 4, 5], [25, 16, 9, 4, 1]), -1);
});

test('spearman with ties equals Pearson of average ranks (hand-computed)', () => {
  // ranks x = [1, 2.5, 2.5, 4], y = [1, 3, 2, 4]; centred: dx = [-1.5, 0, 0, 1.5], dy = [-1.5, .5, -.5, 1.5]
  // sxy = 4.5, sxx = 4.5, syy = 5 -> 4.5 / sqrt(22.5) = 3 / sqrt(10)
  close(spearman([1, 2, 2, 3], [1, 3, 2, 4]), 3 / Math.sqrt(10));
  // the classic textbook case without ties: 1 - 6 sum d^2 / (n (n^2 - 1)), d = [0, -1, 1, 0, 0] -> 1 - 12/120
  close(spearman([1, 2, 3, 4, 5], [1, 3, 2, 4, 5]), 0.9);
});

test('spearman: NaN input propagates (scipy default)', () => {
  assert.ok(Number.isNaN(spearman([1, NaN, 3], [1, 2, 3])));
});

test('cosine: values, zero-vector guard, NaN components', () => {
  close(cosine([1, 0], [0, 1]), 0);
  close(cosine([1, 2, 3], [2, 4, 6]), 1);
  close(cosine([1, 2, 3], [-1, -2, -3]), -1);
  close(cosine([3, 4], [4, 3]), 24 / 25);
  assert.equal(cosine([0, 0, 0], [1, 2, 3]), 0);
  assert.equal(cosine([0, 0], [0, 0]), 0);
  close(cosine([NaN, 1], [1, 1]), 1 / Math.SQRT2);
  assert.throws(() => cosine([1, 2], [1, 2, 3]), /length/);
});
