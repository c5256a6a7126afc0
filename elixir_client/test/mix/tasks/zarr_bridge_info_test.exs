defmodule Mix.Tasks.ZarrBridge.InfoTest do
  # `mix zarr_bridge.info` run for real (Mix.Task.rerun) on stores written by
  # zarr-python; every printed value is compared with what Python reads from
  # the store itself (metadata documents, file and zip entry sizes).
  use ExUnit.Case, async: false

  import ExUnit.CaptureIO

  alias ZarrBridge.Test.{JSON, Python}

  @moduletag timeout: 180_000

  # Expected rows of every array below `sys.argv[1]` (a directory or a zip),
  # computed from the store: the codecs are rendered as the task documents
  # them (name(key: json, ...) joined by " → ").
  @expected """
  import zipfile
  METADATA = {'.zarray', '.zattrs', '.zgroup', '.zmetadata', 'zarr.json'}

  def dumps(v):
      return json.dumps(v, sort_keys=True, ensure_ascii=False)

  def codec(name, conf):
      if not conf:
          return name
      return name + '(' + ', '.join(k + ': ' + dumps(v) for k, v in sorted(conf.items())) + ')'

  def chain(codecs):
      return ' → '.join(codec(c['name'], c.get('configuration') or {}) for c in codecs) or 'none'

  def shape(s):
      if s is None:
          return 'none'
      s = list(s)
      return '(' + str(s[0]) + ',)' if len(s) == 1 else '(' + ', '.join(map(str, s)) + ')'

  def human(n):
      if n < 1024:
          return f'{n} bytes'
      v, units = n / 1024, ['KiB', 'MiB', 'GiB', 'TiB']
      while v >= 1024 and len(units) > 1:
          v, units = v / 1024, units[1:]
      return f'{n} bytes ({v:.1f} {units[0]})'

  path = sys.argv[1]
  is_zip = os.path.isfile(path)
  if is_zip:
      zf = zipfile.ZipFile(path)
      entries = {i.filename: i.file_size for i in zf.infolist() if not i.is_dir()}
      def read_doc(key):
          return json.loads(zf.read(key)) if key in entries else None
  else:
      entries = {}
      for d, _, files in os.walk(path):
          for f in files:
              full = os.path.join(d, f)
              entries[os.path.relpath(full, path).replace(os.sep, '/')] = os.path.getsize(full)
      def read_doc(key):
          full = os.path.join(path, key)
          return json.load(open(full)) if os.path.exists(full) else None

  def join(node, key):
      return node + '/' + key if node else key

  out = {}
  nodes = sorted({k.rsplit('/', 1)[0] if '/' in k else '' for k in entries
                  if k.rsplit('/', 1)[-1] in ('.zarray', 'zarr.json')})
  for node in nodes:
      v3 = read_doc(join(node, 'zarr.json'))
      v2 = read_doc(join(node, '.zarray'))
      if v3 is not None and v3.get('node_type') != 'array':
          continue
      if v3 is None and v2 is None:
          continue
      rows = {}
      if v3 is not None:
          fmt, shp = 3, v3['shape']
          grid = v3['chunk_grid']['configuration']['chunk_shape']
          codecs = v3['codecs']
          rows['format'] = 'Zarr v3'
          if len(codecs) == 1 and codecs[0]['name'] == 'sharding_indexed':
              conf = codecs[0]['configuration']
              rows['chunks'], rows['shards'] = shape(conf['chunk_shape']), shape(grid)
              rows['codecs'] = codec('sharding_indexed', {k: conf[k] for k in ('chunk_shape', 'index_location')})
              rows['inner codecs'] = chain(conf['codecs'])
              rows['index codecs'] = chain(conf['index_codecs'])
              what = 'shards'
          else:
              rows['chunks'], rows['shards'] = shape(grid), 'none'
              rows['codecs'] = chain(codecs)
              what = 'chunks'
          names = v3.get('dimension_names')
          rows['dimension names'] = 'none' if names is None else ', '.join(n or '-' for n in names)
          attrs = v3.get('attributes') or {}
          a = zarr.open_array(open_store('zip' if is_zip else 'filesystem', path, 'r'), path=node, mode='r')
      else:
          fmt, shp, grid = 2, v2['shape'], v2['chunks']
          rows['format'] = 'Zarr v2'
          rows['chunks'], rows['shards'] = shape(grid), 'none'
          filters = [codec(f['id'], {k: v for k, v in f.items() if k != 'id'}) for f in v2['filters'] or []]
          rows['filters'] = ' → '.join(filters) or 'none'
          c = v2['compressor']
          rows['compressor'] = 'none' if c is None else codec(c['id'], {k: v for k, v in c.items() if k != 'id'})
          rows['dimension names'] = 'none'
          attrs = read_doc(join(node, '.zattrs')) or {}
          what = 'chunks'
          a = zarr.open_array(open_store('zip' if is_zip else 'filesystem', path, 'r'), path=node, mode='r')
      rows['shape'] = shape(shp)
      rows['dtype'] = str(a.dtype)
      rows['attributes'] = '\\n'.join(k + ': ' + dumps(v) for k, v in sorted(attrs.items())) or 'none'
      prefix = node + '/' if node else ''
      chunk_keys = [k for k in entries if k.startswith(prefix) and k.rsplit('/', 1)[-1] not in METADATA
                    and not any(k.startswith(join(other, '')) for other in nodes if other != node and other.startswith(prefix) and other)]
      stored = sum(entries[k] for k in chunk_keys)
      total = 1
      for n, g in zip(shp, grid):
          total *= -(-n // g)
      nbytes = int(np.prod(shp)) * a.dtype.itemsize
      rows[what + ' stored'] = f'{len(chunk_keys)} of {total}'
      rows['stored size'] = human(stored)
      rows['size in memory'] = human(nbytes)
      rows['compression ratio'] = f'{nbytes / stored:.2f}' if stored else '- (nothing stored)'
      out[node or '/'] = rows
  print(json.dumps(out, ensure_ascii=False))
  """

  setup do
    dir = Path.join(System.tmp_dir!(), "zb-info-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf!(dir) end)
    {:ok, dir: dir}
  end

  defp python!(script, args), do: Python.run!(Python.prelude() <> script, args)

  defp expected(path), do: JSON.decode!(python!(@expected, [path]))

  defp info(args) do
    capture_io(fn -> Mix.Task.rerun("zarr_bridge.info", args) end)
  end

  # The output's sections: header line -> %{label => value} (continuation
  # lines joined with "\n").
  defp sections(out) do
    out
    |> String.split(~r/\n\n+/, trim: true)
    |> Map.new(fn block ->
      [header | lines] = String.split(block, "\n", trim: true)
      {header, if(header == "tree", do: lines, else: rows(lines))}
    end)
  end

  defp rows(lines) do
    rows =
      Enum.reduce(lines, [], fn line, acc ->
        case Regex.run(~r/^  (\S(?:.*?\S)?)  +(\S.*)$/, line) do
          [_, label, value] when binary_part(line, 2, 1) != " " ->
            [{label, value} | acc]

          _ ->
            [{label, value} | rest] = acc
            [{label, value <> "\n" <> String.trim(line)} | rest]
        end
      end)

    rows |> Enum.reverse() |> Map.new()
  end

  defp assert_arrays(out, path, opts) do
    want = expected(path)
    got = sections(out)
    assert map_size(want) == Keyword.get(opts, :count, map_size(want))

    for {node, rows} <- want do
      section = Map.fetch!(got, "array #{node}")

      for {label, value} <- rows do
        assert {label, section[label]} == {label, value}, "array #{node}:\n#{out}"
      end
    end

    {want, got}
  end

  test "a v2 array with filters and a compressor, partly written", %{dir: dir} do
    path = Path.join(dir, "v2.zarr")

    python!(
      """
      z = zarr.create_array(sys.argv[1], shape=(30, 20), chunks=(7, 8), dtype='int32', zarr_format=2,
                            filters=[numcodecs.Delta(dtype='<i4')], compressors=numcodecs.Zlib(level=5),
                            chunk_key_encoding={'name': 'v2', 'separator': '/'}, fill_value=-1,
                            attributes={'units': 'counts', 'made by': 'zarr-python', 'nested': {'ü': [1, 2.5]}})
      z[0:14, 0:20] = np.arange(280, dtype='int32').reshape(14, 20)
      z[29, 19] = 7
      """,
      [path]
    )

    out = info([path])
    {want, got} = assert_arrays(out, path, count: 1)
    assert want["/"]["chunks stored"] == "7 of 15"
    assert got[path]["node"] == "Zarr v2 array"
    assert got["array /"]["fill value"] == "-1"
  end

  test "nested v3 groups with a sharded array, consolidated", %{dir: dir} do
    path = Path.join(dir, "v3.zarr")

    python!(
      """
      root = zarr.open_group(sys.argv[1], mode='w', zarr_format=3, attributes={'title': 'survey'})
      s = root.create_array('a/b/sharded', shape=(20, 16), chunks=(2, 4), shards=(10, 8), dtype='uint16',
                            dimension_names=['y', 'x'], attributes={'scale': 0.5})
      s[0:10, :] = np.arange(160, dtype='uint16').reshape(10, 16)
      t = root.create_array('temps', shape=(100,), chunks=(30,), dtype='float64',
                            compressors=zarr.codecs.BloscCodec(cname='lz4', clevel=5, shuffle='shuffle'))
      t[:] = np.linspace(0, 1, 100)
      root.create_array('a/empty', shape=(4, 4), chunks=(2, 2), dtype='bool')
      zarr.consolidate_metadata(sys.argv[1])
      """,
      [path]
    )

    out = info([path])
    {want, got} = assert_arrays(out, path, count: 3)
    assert want["a/b/sharded"]["shards stored"] == "2 of 4"
    assert want["a/empty"]["compression ratio"] == "- (nothing stored)"
    header = got[path]
    assert header["node"] == "Zarr v3 group (consolidated metadata)"
    assert header["below it"] == "3 arrays, 2 groups"
    assert header["attributes"] == ~s(title: "survey")
    assert "  │   ├── b" in got["tree"]
    assert "  │   │   └── sharded (20, 16) uint16" in got["tree"]

    # --node describes one node below the root
    out = info([path, "--node", "a/b/sharded"])
    assert sections(out)["array a/b/sharded"] == got["array a/b/sharded"]
  end

  test "a v2 group in a zip archive, with consolidated metadata", %{dir: dir} do
    path = Path.join(dir, "archive.zip")

    python!(
      """
      store = ZipStore(sys.argv[1], mode='w')
      root = zarr.group(store=store, zarr_format=2)
      a = root.create_array('labels/ids', shape=(50,), chunks=(20,), dtype='int64', compressors=None)
      a[:] = np.arange(50)
      b = root.create_array('m', shape=(6, 6), chunks=(3, 3), dtype='float32',
                            compressors=numcodecs.Blosc(cname='zstd', clevel=3, shuffle=2))
      b[:3, :3] = 1.5
      zarr.consolidate_metadata(store)
      store.close()
      """,
      [path]
    )

    out = info([path])
    {want, got} = assert_arrays(out, path, count: 2)
    assert want["labels/ids"]["compressor"] == "none"
    # the edge chunk is stored whole: 3 chunks of 160 bytes for 400 bytes of data
    assert want["labels/ids"]["chunks stored"] == "3 of 3"
    assert want["labels/ids"]["stored size"] == "480 bytes"
    assert got[path]["storage"] == "zip"
    assert got[path]["node"] == "Zarr v2 group (consolidated metadata)"
  end

  test "a path with no Zarr node, and a missing path, are clear errors", %{dir: dir} do
    assert_raise Mix.Error, ~r/no such file or directory/, fn ->
      info([Path.join(dir, "missing")])
    end

    assert_raise Mix.Error, ~r/holds no Zarr array or group/, fn -> info([dir]) end
    assert_raise Mix.Error, ~r/usage: mix zarr_bridge.info PATH/, fn -> info([]) end
  end

  test "the task is listed by mix help" do
    out = capture_io(fn -> Mix.Task.rerun("help", []) end)
    assert out =~ ~r/mix zarr_bridge.info +# Describes a Zarr store/
    assert out =~ ~r/mix zarr_bridge.doctor +# Checks that the ZarrBridge sidecar can serve/
  end
end
