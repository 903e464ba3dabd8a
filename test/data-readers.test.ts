import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { linkSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { UserError } from '../src/errors.js';
import { readDelimitedText } from '../src/data/delimited.js';
import { CORPUS_LINES, LineSplitter, MAX_LINE_BYTES, openCorpus, parseColumn, READ_CHUNK_BYTES, readAll, type ReadStats } from '../src/data/readers.js';
import { ROOT, shared, SKIP_NO_SHARED, srcImport } from './helpers.js';

const dir = mkdtempSync(path.join(tmpdir(), 'micse-readers-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, content: string | Buffer): string {
  const p = path.join(dir, name);
  writeFileSync(p, content);
  return p;
}

test('txt: BOM, CRLF, blank lines skipped and counted, last line without newline', async () => {
  const p = file('a.txt', '\ufeffFirst one\r\n\r\n  \r\nSecond, with comma\r\nThird "quoted"');
  const { lines, stats } = await readAll(p);
  assert.deepEqual(lines, [
    { text: 'First one', line: 1 },
    { text: 'Second, with comma', line: 4 },
    { text: 'Third "quoted"', line: 5 },
  ]);
  assert.equal(stats.blank, 2);
  assert.equal(stats.lines, 5);
  assert.equal(stats.records, 3);
  assert.equal(stats.bom, true);
  assert.match(stats.sha256 ?? '', /^[0-9a-f]{64}$/);
});

test('txt: invalid UTF-8 lines are skipped with line numbers, or fail', async () => {
  const p = file('bad.txt', Buffer.concat([Buffer.from('ok\nbad '), Buffer.from([0xff, 0xfe]), Buffer.from('\nfine\n\xc3\xa9t\xc3\xa9\n', 'latin1')]));
  const { lines, stats } = await readAll(p);
  assert.deepEqual(lines.map((l) => l.line), [1, 3, 4]);
  assert.equal(lines[2]!.text, 'été');
  assert.equal(stats.invalid, 1);
  assert.deepEqual(stats.invalidLines, [2]);
  await assert.rejects(readAll(p, { onInvalid: 'fail' }), (e: unknown) => e instanceof UserError && /bad\.txt:2: not valid UTF-8/.test(e.message));
});

test('txt: lines split across read chunks and multi-byte characters are intact', async () => {
  const long = 'ü'.repeat(700_000); // 1.4 MB line, larger than one read chunk
  const p = file('long.txt', `${long}\nx\n`);
  const { lines } = await readAll(p);
  assert.equal(lines.length, 2);
  assert.equal(lines[0]!.text, long);
});

test('UTF-16/UTF-32 (by byte-order mark) and files with NULs on half their lines are refused naming the file, txt and CSV alike; a UTF-8 BOM is not', async () => {
  const utf16le = Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('hello\nworld\n', 'utf16le')]);
  const cases: [string, Buffer, RegExp][] = [
    ['u16.txt', utf16le, /^\S*u16\.txt: UTF-16 text \(byte order mark FF FE, UTF-16 little-endian\); save it as UTF-8$/],
    ['u16.csv', utf16le, /u16\.csv: UTF-16 text \(byte order mark FF FE/],
    ['u16be.txt', Buffer.from([0xfe, 0xff, 0, 0x68]), /u16be\.txt: UTF-16 text \(byte order mark FE FF, UTF-16 big-endian\)/],
    ['u32.txt', Buffer.from([0xff, 0xfe, 0, 0, 0x68, 0, 0, 0]), /u32\.txt: UTF-32 text \(byte order mark FF FE 00 00, UTF-32 little-endian\)/],
    ['nobom16.txt', Buffer.from('hello\nworld\n', 'utf16le'),
      /^\S*nobom16\.txt:1: NUL byte, not text \(NUL bytes on 3 of the first 3 lines: a binary file, or UTF-16\/UTF-32 without a byte order mark\?\); save it as UTF-8$/],
    ['nobom16be.txt', Buffer.from('hello\nworld\n', 'utf16le').swap16(), /nobom16be\.txt:1: NUL byte, not text \(NUL bytes on 2 of the first 2 lines/],
    // CJK in UTF-16 LE: no zero byte but the one of each line break, which lands on the next line.
    ['cjk16.csv', Buffer.from('中文\n', 'utf16le'), /cjk16\.csv:2: NUL byte, not text \(NUL bytes on 1 of the first 2 lines/],
    ['nul-last.txt', Buffer.from('ok\nno newline \0'), /nul-last\.txt:2: NUL byte, not text \(NUL bytes on 1 of the first 2 lines/],
  ];
  for (const [name, content, pattern] of cases) {
    const p = file(name, content);
    for (const onInvalid of ['skip', 'fail'] as const) {
      await assert.rejects(readAll(p, { onInvalid }), (e: unknown) => e instanceof UserError && pattern.test(e.message), `${name} ${onInvalid}`);
    }
  }
  assert.deepEqual((await readAll(file('bom8.txt', '\ufeffhi\n'))).lines, [{ text: 'hi', line: 1 }]);
  assert.deepEqual((await readAll(file('short.txt', 'a'))).lines, [{ text: 'a', line: 1 }], 'a file shorter than a mark');
});

test('a line holding a NUL byte in a text file is an invalid line: skipped and counted, or fails naming it; txt and CSV alike', async () => {
  const txt = file('nul.txt', 'one\ntwo \0 x\nthree\nfour\n');
  const t = await readAll(txt);
  assert.deepEqual(t.lines.map((l) => l.line), [1, 3, 4]);
  assert.deepEqual([t.stats.invalid, t.stats.invalidLines, t.stats.records], [1, [2], 3]);
  await assert.rejects(readAll(txt, { onInvalid: 'fail' }),
    (e: unknown) => e instanceof UserError && /^\S*nul\.txt:2: NUL byte, not text \(pass onInvalid: skip \/ --on-invalid skip to skip such lines\)$/.test(e.message));
  const csv = file('nul.csv', 's\nok\n"bin\0ary\nspans two"\nfine\n');
  const c = await readAll(csv);
  assert.deepEqual(c.lines, [{ text: 'ok', line: 2 }, { text: 'fine', line: 5 }]);
  assert.deepEqual([c.stats.invalid, c.stats.invalidLines], [1, [3]]);
  await assert.rejects(readAll(csv, { onInvalid: 'fail' }), (e: unknown) => e instanceof UserError && /nul\.csv:3: NUL byte, not text/.test(e.message));
  await assert.rejects(readAll(file('nul-head.csv', 's\0\nok\nfine\n')), (e: unknown) => e instanceof UserError && /nul-head\.csv:1: header holds a NUL byte$/.test(e.message));
  // Past the first read chunk (the sample a binary file is told by) NUL lines are skipped one by one.
  const late = file('late.txt', `${'text line\n'.repeat(120_000)}${'\0\0\0\n'.repeat(5)}last\n`);
  const l = await readAll(late);
  assert.deepEqual([l.stats.records, l.stats.invalid, l.stats.invalidLines], [120_001, 5, [120_001, 120_002, 120_003, 120_004, 120_005]]);
});

test('csv: header, quoted commas, embedded newlines, "" escapes, BOM, CRLF', async () => {
  const p = file('a.csv', '\ufeffid,sent0\r\n1,"Hello, world"\r\n2,"two\r\nlines"\r\n\r\n3,"say ""hi"""\r\n4,plain\r\n');
  const { lines, stats } = await readAll(p, { column: 'sent0' });
  assert.deepEqual(lines, [
    { text: 'Hello, world', line: 2 },
    { text: 'two\r\nlines', line: 3 },
    { text: 'say "hi"', line: 6 },
    { text: 'plain', line: 7 },
  ]);
  assert.deepEqual(stats.header, ['id', 'sent0']);
  assert.equal(stats.columnIndex, 1);
  assert.equal(stats.blank, 1);
  const byIndex = await readAll(p, { column: 1 });
  assert.deepEqual(byIndex.lines.map((l) => l.text), lines.map((l) => l.text), 'index 1 + known header name "sent0" -> header detected');
  const byIndexNoHeader = await readAll(p, { column: '1', header: false });
  assert.equal(byIndexNoHeader.lines[0]!.text, 'sent0');
  const firstColumn = await readAll(p);
  assert.deepEqual(firstColumn.lines.map((l) => l.text), ['1', '2', '3', '4']);
});

test('csv/tsv: \\r\\n and \\n line ends in one file each end a record; a lone \\r is text', async () => {
  const csv = 'text\r\na\nb\r\nc\rd\n"e\r\nf"\ng';
  const expected = [{ text: 'a', line: 2 }, { text: 'b', line: 3 }, { text: 'c\rd', line: 4 }, { text: 'e\r\nf', line: 5 }, { text: 'g', line: 7 }];
  assert.deepEqual((await readAll(file('mixed.csv', csv))).lines, expected);
  assert.deepEqual(readDelimitedText(csv, 'mixed.csv', ','), expected);
  const tsv = 'id\ttext\n1\ta\r\n2\tb\n';
  assert.deepEqual((await readAll(file('mixed.tsv', tsv), { column: 'text' })).lines, [{ text: 'a', line: 2 }, { text: 'b', line: 3 }]);
});

test('csv without header read by index; tsv with quoted tab', async () => {
  const p = file('nohead.csv', 'a sentence,x\nanother,y\n');
  assert.deepEqual((await readAll(p, { column: 0 })).lines.map((l) => l.text), ['a sentence', 'another']);
  const t = file('a.tsv', 'text\tlabel\n"with\ttab"\t1\nplain, comma\t0\n');
  assert.deepEqual((await readAll(t, { column: 'text' })).lines.map((l) => l.text), ['with\ttab', 'plain, comma']);
});

/** Malformed CSV files and the line each must be reported at. */
const MALFORMED: [string, string, number][] = [
  ['q1.csv', 's\nok\n"never closed\nmore\n', 3],
  ['q2.csv', 's,t\na,b\nfoo"bar,c\n', 3],
  ['q3.csv', 's,t\r\na,b\r\nc,d\r\ne\r\n', 4],
  ['q4.csv', 's,t\na,b\n"x"y,c\n', 3],
  ['q5.csv', 's,t\na,b\n\n\n"x\n"y,c\n', 5],
  ['q6.csv', `s,t\r\n${'"a ""quoted"", long sentence",b\r\n'.repeat(80_000)}c\r\n`, 80_002],
  // An unclosed quote is reported where it opens, not where the parser gave up (the end of the file).
  ['q7.csv', `s,t\na,b\nccccc,"d\n${'x,y\n'.repeat(2000)}`, 3],
  ['q8.csv', `s,t\na,b\n"x\ny","z\nw\n${'x,y\r\n'.repeat(2000)}`, 4],
  // Text after a closing quote: the line where that field starts, not the next one.
  ['q9.csv', 'id,text\n1,hello\n2,"bad"quote\n3,x\n', 3],
  ['q10.csv', 'id,text\r\n1,"multi\r\nline"bad\r\n3,x\r\n', 2],
  ['q11.csv', '"bad"quote,x\na,b\n', 1],
  // A wrong field count: the line where the record starts, also when its fields span lines.
  ['q12.csv', 's,t\n"a\nb\nc",d,e\n3,x\n', 2],
];

test('malformed CSV fails with file and line number', async () => {
  for (const [name, content, line] of MALFORMED) {
    const p = file(name, content);
    await assert.rejects(
      readAll(p),
      (e: unknown) => e instanceof UserError && e.message.includes(`${name}:${line}:`) && /malformed CSV/.test(e.message),
      name,
    );
  }
});

test('malformed CSV/TSV: the message says the line is where the faulty field or record starts', async () => {
  const tsv = '\ufeffid\ttext\n1\thello\n2\t"bad"quote\n3\tx\n';
  const expected = /b\.tsv:3: malformed TSV: the field starting on this line: Invalid Closing Quote: got "q" instead of delimiter/;
  await assert.rejects(readAll(file('b.tsv', tsv)), (e: unknown) => e instanceof UserError && expected.test(e.message));
  assert.throws(() => readDelimitedText(tsv, 'b.tsv', '\t'), expected);
  await assert.rejects(readAll(file('r.csv', 's,t\n"a\nb",c,d\n')), /r\.csv:2: malformed CSV: the record starting on this line: Invalid Record Length: expect 2, got 3$/);
  await assert.rejects(readAll(file('u.csv', 's\n"open\n')), /u\.csv:2: malformed CSV: the quoted field starting on this line is never closed$/);
});

test('csv: bad column name, missing column, invalid UTF-8 record', async () => {
  const p = file('c.csv', 'a,b\nx,y\n');
  await assert.rejects(readAll(p, { column: 'nope' }), /c\.csv:1: data\.column "nope" is not in the header \[a, b\]$/);
  await assert.rejects(readAll(p, { column: 5 }), /c\.csv:1: record has 2 column\(s\), no column 5 \(0-based, data\.column\)$/);
  await assert.rejects(readAll(p, { column: 'nope', names: { column: '--column' } }), /c\.csv:1: --column "nope" is not in the header \[a, b\]$/);
  const bad = file('bad.csv', Buffer.concat([Buffer.from('s\n"multi\n'), Buffer.from([0xc3]), Buffer.from('"\nfine\n')]));
  const r = await readAll(bad, { column: 's' });
  assert.deepEqual(r.lines, [{ text: 'fine', line: 4 }]);
  assert.deepEqual(r.stats.invalidLines, [3]);
  await assert.rejects(readAll(bad, { column: 's', onInvalid: 'fail' }), /bad\.csv:3: not valid UTF-8/);
});

test('missing file and column on txt are UserErrors', async () => {
  await assert.rejects(readAll(path.join(dir, 'nope.txt')), (e: unknown) => e instanceof UserError && /nope\.txt/.test(e.message));
  assert.throws(() => openCorpus('x.txt', { column: 1 }), UserError);
  assert.equal(parseColumn('3'), 3);
  assert.equal(parseColumn('sent0'), 'sent0');
  assert.equal(parseColumn(null), null);
});

test('in-memory CSV/TSV (the demo page\'s reader) gives the streaming reader\'s records, lines and errors', async () => {
  const cases: [string, string, { column?: string | number; header?: boolean }][] = [
    ['m1.csv', '\ufeffid,sent0\r\n1,"Hello, world"\r\n2,"two\r\nlines"\r\n\r\n3,"say ""hi"""\r\n4,plain\r\n', { column: 'sent0' }],
    ['m2.csv', 'id,sent0\n1,"a quoted\nnewline, and a comma"\n\n\n2,"é\n\nü"\n3,   \n4,last', { column: 1 }],
    ['m3.csv', 'x,sentence\n1,a\n', { column: 1, header: false }],
    ['m4.csv', 'a sentence,x\nanother,y\n', { column: 0 }],
    ['m5.tsv', 'text\tlabel\n"with\ttab\nand newline"\t1\nplain, comma\t0\n', { column: 'text' }],
  ];
  for (const [name, content, opts] of cases) {
    const { lines } = await readAll(file(name, content), opts);
    assert.deepEqual(readDelimitedText(content, name, name.endsWith('.tsv') ? '\t' : ',', opts), lines, name);
  }
  const quoted = readDelimitedText('id,sent0\n1,"a quoted\nnewline"\n2,next\n', 'q.csv', ',', { column: 'sent0' });
  assert.deepEqual(quoted, [{ text: 'a quoted\nnewline', line: 2 }, { text: 'next', line: 4 }]);
  for (const [name, content, line] of MALFORMED) {
    assert.throws(() => readDelimitedText(content, name, ','),
      (e: unknown) => e instanceof UserError && e.message.includes(`${name}:${line}:`) && /malformed CSV/.test(e.message), name);
  }
  assert.throws(() => readDelimitedText('a,b\nx,y\n', 'c.csv', ',', { column: 'nope' }), /c\.csv:1: column "nope" is not in the header \[a, b\]/);
  assert.throws(() => readDelimitedText('a,b\nx,y\n', 'c.csv', ',', { column: 5 }), /c\.csv:1: record has 2 column\(s\), no column 5 \(0-based, column\)/);
});

test('shared wiki1m head streams 11,913 sentences', { skip: SKIP_NO_SHARED }, async () => {
  const { lines, stats } = await readAll(shared('wiki1m-head.txt'));
  assert.equal(stats.lines, 11_913);
  assert.equal(lines.length + stats.blank + stats.invalid, 11_913);
  assert.equal(lines[0]!.text, 'YMCA in South Australia');
});

test('the line splitter holds a long stretch without a newline in time linear in its length (it was copied again for every chunk)', () => {
  // 16 MiB in 16 KiB chunks (files come in 1 MiB reads): one line, and the same bytes as 1024 lines; the splitter is
  // given a line limit of 16 MiB (the readers' MAX_LINE_BYTES is 4 MiB).
  const CHUNK = 16 << 10;
  const CHUNKS = 1024;
  const split = (newlines: boolean): { ms: number; lines: { begin: number; end: number; line: number; offset: number; valid: boolean }[] } => {
    const chunks = Array.from({ length: CHUNKS }, () => Buffer.alloc(CHUNK, 0x61));
    if (newlines) for (const c of chunks) c[CHUNK - 1] = 10;
    const stats = { lines: 0, records: 0, blank: 0, invalid: 0, invalidLines: [], bom: false, bytes: 0, sha256: null, header: null, columnIndex: null };
    const splitter = new LineSplitter('big.txt', createHash('sha256'), stats, CORPUS_LINES, CHUNK * CHUNKS);
    const lines: { begin: number; end: number; line: number; offset: number; valid: boolean }[] = [];
    const t0 = performance.now();
    for (const c of chunks) for (const v of splitter.push(c)) lines.push({ begin: v.begin, end: v.end, line: v.line, offset: v.offset, valid: v.valid });
    for (const v of splitter.end()) lines.push({ begin: v.begin, end: v.end, line: v.line, offset: v.offset, valid: v.valid });
    const ms = performance.now() - t0;
    assert.equal(stats.bytes, CHUNK * CHUNKS);
    assert.equal(stats.lines, newlines ? CHUNKS : 1);
    return { ms, lines };
  };
  const many = split(true);
  const one = split(false);
  // What is read is unchanged: one valid line of every byte.
  assert.deepEqual(one.lines, [{ begin: 0, end: CHUNK * CHUNKS, line: 1, offset: 0, valid: true }]);
  assert.deepEqual(many.lines.at(-1), { begin: 0, end: CHUNK - 1, line: CHUNKS, offset: CHUNK * (CHUNKS - 1), valid: true });
  // Both hash every byte once; the quadratic splitter copied 8 GiB for the single line (about 4 s here, against
  // ~270 ms for either input now): the margin leaves room for a loaded machine.
  assert.ok(one.ms < 4 * many.ms + 1500, `one line: ${one.ms.toFixed(0)} ms, the same bytes as ${CHUNKS} lines: ${many.ms.toFixed(0)} ms`);
});

/** Reads `file` to its end with `opts`; returns the UserError it fails with and the stats at that point. */
async function failure(file: string, opts: Parameters<typeof openCorpus>[1] = {}): Promise<{ message: string; stats: ReadStats }> {
  const reader = openCorpus(file, opts);
  try {
    for await (const _ of reader);
  } catch (err) {
    assert.ok(err instanceof UserError, String(err));
    return { message: err.message, stats: reader.stats };
  }
  assert.fail(`${file}: read without error`);
}

/** What a reader may have taken in before refusing a line past MAX_LINE_BYTES: the limit and the chunk that crossed it. */
const MOST_READ = MAX_LINE_BYTES + READ_CHUNK_BYTES;
const tooLong = (name: string, line: number): RegExp =>
  new RegExp(`^\\S*${name.replace('.', '\\.')}:${line}: line longer than ${MAX_LINE_BYTES} bytes: a corpus holds one sentence or record per line \\(is this a JSON dump, or a compressed or binary file\\?\\)$`);

test('a file without line breaks, text or binary, fails with its first chunks read, whatever onInvalid says; txt, CSV and TSV alike', async () => {
  // Text: several read chunks of one line (a minified JSON dump). It is refused once MAX_LINE_BYTES have come.
  const text = file('dump.txt', Buffer.alloc(MAX_LINE_BYTES + 2 * READ_CHUNK_BYTES, 'x'));
  // Binary with no 0x0A byte (a compressed file): the first chunk is one line with a NUL, judged binary at once.
  const bytes = Buffer.alloc(3 * READ_CHUNK_BYTES);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 131 + (i >> 8)) & 0xff;
  for (let i = bytes.indexOf(10); i >= 0; i = bytes.indexOf(10, i)) bytes[i] = 11;
  const binary = file('blob.txt', bytes);
  for (const ext of ['txt', 'csv', 'tsv']) {
    const t = path.join(dir, `dump-${ext}.${ext}`);
    const b = path.join(dir, `blob-${ext}.${ext}`);
    linkSync(text, t);
    linkSync(binary, b);
    for (const onInvalid of ['skip', 'fail'] as const) {
      const long = await failure(t, { onInvalid });
      assert.match(long.message, tooLong(path.basename(t), 1), `${ext} ${onInvalid}`);
      assert.ok(long.stats.bytes > MAX_LINE_BYTES && long.stats.bytes <= MOST_READ, `${ext} ${onInvalid}: ${long.stats.bytes} bytes read`);
      const bin = await failure(b, { onInvalid });
      assert.match(bin.message, new RegExp(`blob-${ext}\\.${ext}:1: NUL byte, not text \\(NUL bytes on 1 of the first 1 lines: a binary file`), `${ext} ${onInvalid}`);
      assert.equal(bin.stats.bytes, READ_CHUNK_BYTES, `${ext} ${onInvalid}: judged by the first chunk`);
    }
  }
});

test('a file far larger than the line limit fails after reading the limit and one chunk (memory does not grow with the file)', async () => {
  // 1 GiB, sparse: a MiB of text, then zeros without a line break (holding it whole would take a GiB and seconds).
  const p = file('huge.txt', Buffer.alloc(READ_CHUNK_BYTES, 'y'));
  truncateSync(p, 1 << 30);
  const t0 = performance.now();
  const { message, stats } = await failure(p);
  assert.match(message, tooLong('huge.txt', 1));
  assert.ok(stats.bytes <= MOST_READ, `${stats.bytes} bytes read`);
  assert.ok(performance.now() - t0 < 10_000, `${(performance.now() - t0).toFixed(0)} ms`);
});

test('a line past MAX_LINE_BYTES in a valid file is refused naming it, not skipped; one of MAX_LINE_BYTES is read', async () => {
  const long = 'z'.repeat(MAX_LINE_BYTES + 1);
  for (const [name, content, line] of [
    ['mid.txt', `one\ntwo\n${long}\nfour\n`, 3],
    ['mid-crlf.txt', `one\r\n\r\n${long}\r\nfour\r\n`, 3],
    ['last.txt', `one\n${long}`, 2],
    ['mid.csv', `text\none\n${long}\nfour\n`, 3],
    ['mid.tsv', `id\ttext\n1\tone\n2\t${long}\n3\tfour\n`, 3],
  ] as const) {
    const p = file(name, content);
    for (const onInvalid of ['skip', 'fail'] as const) {
      const { message, stats } = await failure(p, { onInvalid, ...(name.endsWith('.tsv') ? { column: 'text' } : {}) });
      assert.match(message, tooLong(name, line), `${name} ${onInvalid}`);
      assert.equal(stats.invalid, 0);
    }
  }
  // The limit itself passes, with either line end.
  const most = 'w'.repeat(MAX_LINE_BYTES);
  for (const [name, content] of [['most.txt', `a\n${most}\nb\n`], ['most-crlf.txt', `a\r\n${most}\r\nb`], ['most-last.txt', `a\n${most}`]] as const) {
    const { lines } = await readAll(file(name, content));
    assert.deepEqual(lines.map((l) => [l.line, l.text.length]), [[1, 1], [2, MAX_LINE_BYTES], ...(name === 'most-last.txt' ? [] : [[3, 1]])], name);
  }
});

test('CSV: a record past MAX_LINE_BYTES (a quote never closed) is malformed at the field that opened it, before the rest is read; in memory too', async () => {
  const lines = 'a short line\n'.repeat(Math.ceil((MAX_LINE_BYTES + 2 * READ_CHUNK_BYTES) / 13));
  const csv = `text\nok\n"never closed\n${lines}`;
  const expected = (name: string): RegExp =>
    new RegExp(`^\\S*${name.replace('.', '\\.')}:3: malformed CSV: the field starting on this line takes its record past ${MAX_LINE_BYTES} bytes \\(a quote never closed\\?\\)$`);
  const p = file('open.csv', csv);
  const { message, stats } = await failure(p);
  assert.match(message, expected('open.csv'));
  // The parser is a piped chunk behind the line index, which counts the bytes.
  assert.ok(stats.bytes <= MOST_READ + READ_CHUNK_BYTES, `${stats.bytes} of ${csv.length} bytes read`);
  assert.throws(() => readDelimitedText(csv, 'open.csv', ','), (e: unknown) => e instanceof UserError && expected('open.csv').test(e.message));
});

test('CSV: a quote never closed, then MiBs of bare line breaks: the same error at the field\'s line, the heap holding no entry per line', () => {
  // In a child process, whose heap holds nothing else; its heap is sampled while it reads (the line index is garbage after).
  for (const [name, ending] of [['breaks.csv', '\n'], ['breaks-crlf.csv', '\r\n']] as const) {
    const p = file(name, Buffer.concat([Buffer.from(`text${ending}ok${ending}${ending}"never closed${ending}`), Buffer.from(ending.repeat(MAX_LINE_BYTES + 3 * READ_CHUNK_BYTES))]));
    const script = `
      ${srcImport('openCorpus', 'data/readers.ts')}
      const before = process.memoryUsage().heapUsed;
      let peak = before;
      const sample = () => { peak = Math.max(peak, process.memoryUsage().heapUsed); };
      const timer = setInterval(sample, 1);
      let message = 'read without error';
      try {
        for await (const _ of openCorpus(${JSON.stringify(p)})) sample();
      } catch (err) {
        message = err.message;
      }
      sample();
      clearInterval(timer);
      console.log(JSON.stringify({ message, grew: peak - before }));`;
    const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8' });
    const { message, grew } = JSON.parse(out) as { message: string; grew: number };
    assert.match(message, new RegExp(`^\\S*${name.replace('.', '\\.')}:4: malformed CSV: the field starting on this line takes its record past ${MAX_LINE_BYTES} bytes \\(a quote never closed\\?\\)$`));
    // An entry per line held 4M entries (hundreds of MB); the runs of alike lines take a few.
    assert.ok(grew < 64 << 20, `${name}: the heap grew ${(grew / (1 << 20)).toFixed(0)} MiB while reading`);
  }
});
