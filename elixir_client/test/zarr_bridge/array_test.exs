defmodule ZarrBridge.ArrayTest do
  # Real sidecar (the application's default one) on one side, plain
  # zarr-python in a separate Python process on the other: Python writes and
  # Elixir reads, Elixir writes and Python reads, and the bytes must match
  # exactly.
  use ExUnit.Case, async: true

  import ZarrBridge.Test.TmpDir

  alias ZarrBridge.{Array, Error, Metadata, NDArray}
  alias ZarrBridge.Test.Python

  @moduletag timeout: 300_000

  @dtypes [
    :int8,
    :int16,
    :int32,
    :int64,
    :uint8,
    :uint16,
    :uint32,
    :uint64,
    :float32,
    :float64,
    :bool
  ]

  # name => {Elixir form, expected metadata atom, Python v2 expr, Python v3 expr, v3 codec name}
  @compressors [
    none: {nil, nil, "None", "None", nil},
    zlib: {:zlib, :zlib, "numcodecs.Zlib()", "zarr.codecs.numcodecs.Zlib()", "numcodecs.zlib"},
    gzip:
      {{:gzip, level: 5}, :gzip, "numcodecs.GZip(level=5)", "zarr.codecs.GzipCodec(level=5)",
       "gzip"},
    zstd:
      {{:zstd, level: 3}, :zstd, "numcodecs.Zstd(level=3)", "zarr.codecs.ZstdCodec(level=3)",
       "zstd"},
    lz4: {:lz4, :lz4, "numcodecs.LZ4()", "zarr.codecs.numcodecs.LZ4()", "numcodecs.lz4"},
    blosc:
      {{:blosc, cname: "zstd", clevel: 3, shuffle: :shuffle}, :blosc,
       "numcodecs.Blosc(cname='zstd', clevel=3, shuffle=1)",
       "zarr.codecs.BloscCodec(cname='zstd', clevel=3, shuffle='shuffle')", "blosc"},
    bz2: {:bzip2, :bz2, "numcodecs.BZ2()", "zarr.codecs.numcodecs.BZ2()", "numcodecs.bz2"},
    lzma: {:lzma, :lzma, "numcodecs.LZMA()", "zarr.codecs.numcodecs.LZMA()", "numcodecs.lzma"}
  ]

  # shapes with partial edge chunks, by rank
  @geometry %{
    1 => {{37}, {10}},
    2 => {{13, 7}, {5, 3}},
    3 => {{5, 6, 7}, {2, 4, 3}},
    4 => {{3, 4, 5, 2}, {2, 3, 2, 1}}
  }

  # Every (format, dtype) pair once per direction; compressors and ranks are
  # spread so that each compressor and each rank appears with each format in
  # each direction.
  defp matrix(offset) do
    names = Keyword.keys(@compressors)

    for format <- [2, 3], {dtype, i} <- Enum.with_index(@dtypes) do
      comp = Enum.at(names, rem(i + offset + format, length(names)))
      rank = rem(i + offset + format, 4) + 1
      {shape, chunks} = @geometry[rank]

      %{
        name: "v#{format}-#{dtype}-#{comp}-#{rank}d",
        format: format,
        dtype: dtype,
        comp: comp,
        shape: shape,
        chunks: chunks
      }
    end
  end

  test "the sampled matrix covers every dtype, compressor and rank in both formats" do
    for offset <- [0, 5], format <- [2, 3] do
      cases = Enum.filter(matrix(offset), &(&1.format == format))
      assert Enum.sort(Enum.uniq(Enum.map(cases, & &1.dtype))) == Enum.sort(@dtypes)

      assert Enum.sort(Enum.uniq(Enum.map(cases, & &1.comp))) ==
               Enum.sort(Keyword.keys(@compressors))

      assert Enum.sort(Enum.uniq(Enum.map(cases, &tuple_size(&1.shape)))) == [1, 2, 3, 4]
    end
  end

  # ------------------------------------------------------------------
  # Python writes, Elixir reads

  @python_writer """
  import sys, json, numpy as np, zarr, numcodecs, zarr.codecs, zarr.codecs.numcodecs
  import warnings
  warnings.filterwarnings('ignore')
  root, cases = sys.argv[1], eval(sys.argv[2])

  def gen(dtype, shape, seed):
      rng = np.random.default_rng(seed)
      n = int(np.prod(shape))
      dt = np.dtype(dtype)
      if dt.kind == 'b':
          a = rng.integers(0, 2, n).astype(bool)
      elif dt.kind in 'iu':
          info = np.iinfo(dt)
          a = rng.integers(info.min, info.max, n, dtype=dt, endpoint=True)
          a[:2] = [info.min, info.max]
      else:
          a = (rng.standard_normal(n) * 1000).astype(dt)
          a[:4] = [np.nan, np.inf, -np.inf, -0.0]
      return a.reshape(shape)

  for i, c in enumerate(cases):
      path = f"{root}/{c['name']}"
      comp = eval(c['py_comp'])
      kw = dict(shape=c['shape'], chunks=c['chunks'], dtype=c['dtype'], zarr_format=c['format'])
      kw['compressors'] = comp if comp is not None else None
      z = zarr.create_array(path, **kw)
      a = gen(c['dtype'], c['shape'], i)
      z[...] = a
      z.attrs.update({'case': c['name'], 'nested': {'a': [1, 2.5, None, True]}, 'text': '日本'})
      open(path + '.bin', 'wb').write(a.astype(a.dtype.newbyteorder('<')).tobytes())
  print('ok')
  """

  test "arrays written by zarr-python read back exactly in Elixir" do
    dir = tmp_dir("array")
    cases = matrix(0)

    py_cases =
      for c <- cases do
        {_form, _atom, v2, v3, _name} = @compressors[c.comp]

        %{
          "name" => c.name,
          "format" => c.format,
          "dtype" => Atom.to_string(c.dtype),
          "shape" => c.shape,
          "chunks" => c.chunks,
          "py_comp" => if(c.format == 2, do: v2, else: v3)
        }
      end

    assert Python.run!(@python_writer, [dir, Python.literal(py_cases)]) == "ok\n"

    for c <- cases do
      path = Path.join(dir, c.name)
      expected = File.read!(path <> ".bin")
      {_form, comp_atom, _v2, _v3, _name} = @compressors[c.comp]

      assert {:ok, %Array{metadata: meta} = array} = ZarrBridge.open(path: path)
      assert %Metadata{zarr_format: format, shape: shape, chunks: chunks, dtype: dtype} = meta
      assert {format, shape, chunks, dtype} == {c.format, c.shape, c.chunks, c.dtype}, c.name
      assert meta.compressor == comp_atom, c.name

      assert meta.attributes == %{
               "case" => c.name,
               "nested" => %{"a" => [1, 2.5, nil, true]},
               "text" => "日本"
             }

      assert {:ok, nd} = Array.read(array)
      assert nd.shape == c.shape and nd.dtype == c.dtype
      assert nd.data == expected, "#{c.name}: data differs"

      # a sub-box crossing chunk edges, as NDArray and as nested tuples
      full = NDArray.new!(expected, c.shape, c.dtype)
      {start, stop} = inner_box(c.shape)
      sub = slice(full, start, stop)
      assert {:ok, ^sub} = Array.read(array, start: start, stop: stop)
      assert Array.get_slice(array, start: start, stop: stop) == {:ok, NDArray.to_nested(sub)}
    end
  end

  # ------------------------------------------------------------------
  # Elixir writes, Python reads

  @python_reader """
  import sys, numpy as np, zarr, warnings
  warnings.filterwarnings('ignore')
  root, cases = sys.argv[1], eval(sys.argv[2])
  for c in cases:
      path = f"{root}/{c['name']}"
      z = zarr.open_array(path, mode='r')
      md = z.metadata
      assert md.zarr_format == c['format'], (c['name'], md.zarr_format)
      assert tuple(z.shape) == tuple(c['shape']) and tuple(z.chunks) == tuple(c['chunks']), c['name']
      assert z.dtype == np.dtype(c['dtype']), (c['name'], z.dtype)
      if c['format'] == 2:
          codecs = [md.compressor.codec_id] if md.compressor is not None else []
      else:
          codecs = [x.to_dict()['name'] for x in md.codecs if x.to_dict()['name'] != 'bytes']
      a = z[...]
      got = a.astype(a.dtype.newbyteorder('<')).tobytes()
      expected = open(path + '.bin', 'rb').read()
      assert got == expected, (c['name'], 'data differs')
      assert dict(z.attrs) == c['attrs'], (c['name'], dict(z.attrs))
      print(c['name'], ','.join(codecs))
  """

  test "arrays written by Elixir read back exactly in zarr-python" do
    dir = tmp_dir("array")
    cases = matrix(5)

    for {c, i} <- Enum.with_index(cases) do
      path = Path.join(dir, c.name)
      {form, _atom, _v2, _v3, _name} = @compressors[c.comp]

      assert {:ok, array} =
               ZarrBridge.create(
                 path: path,
                 shape: c.shape,
                 chunks: c.chunks,
                 dtype: c.dtype,
                 compressor: form,
                 zarr_version: c.format,
                 attributes: %{"from" => "elixir"}
               )

      assert array.metadata.compressor == elem(@compressors[c.comp], 1)

      data = gen(c.dtype, c.shape, i)

      # Alternate the three ways to write a whole array.
      case rem(i, 3) do
        0 -> assert :ok = Array.set_slice(array, NDArray.to_nested(data))
        1 -> assert :ok = Array.write(array, data)
        2 -> assert :ok = Array.write(array, data.data)
      end

      # Then overwrite a box crossing chunk edges (read-modify-write).
      {start, stop} = inner_box(c.shape)
      box_shape = sub(stop, start)
      patch = gen(c.dtype, box_shape, 1000 + i)
      assert :ok = Array.set_slice(array, NDArray.to_nested(patch), start: start, stop: stop)
      expected = paste(data, patch, start)

      assert :ok = Array.put_attributes(array, %{"replaced" => true, "list" => [1, 2]})
      assert :ok = Array.update_attributes(array, %{"case" => c.name, "list" => [3]})

      File.write!(path <> ".bin", expected.data)
    end

    py_cases =
      for c <- cases do
        %{
          "name" => c.name,
          "format" => c.format,
          "dtype" => Atom.to_string(c.dtype),
          "shape" => c.shape,
          "chunks" => c.chunks,
          "attrs" => %{"replaced" => true, "list" => [3], "case" => c.name}
        }
      end

    out = Python.run!(@python_reader, [dir, Python.literal(py_cases)])

    lines =
      out
      |> String.split("\n", trim: true)
      |> Map.new(&List.to_tuple(String.split(&1, " ", parts: 2)))

    for c <- cases do
      {_form, _atom, _v2, _v3, v3_name} = @compressors[c.comp]

      expected =
        case {c.format, c.comp} do
          {_, :none} -> ""
          {2, comp} -> Atom.to_string(elem(@compressors[comp], 1))
          {3, _} -> v3_name
        end

      assert Map.fetch!(lines, c.name) == expected, c.name
    end
  end

  # ------------------------------------------------------------------
  # The seed's two flows, as written in the guide (ExZarr renamed).

  test "the seed's Python-to-Elixir flow" do
    dir = tmp_dir("array")
    path = Path.join(dir, "measurements")

    Python.run!(
      """
      import sys, zarr, numpy as np, numcodecs, warnings
      warnings.filterwarnings('ignore')
      z = zarr.open_array(sys.argv[1], mode='w', shape=(1000, 500), chunks=(100, 50),
                          dtype='float64', compressor=numcodecs.Blosc(cname='zstd', clevel=3),
                          zarr_format=2)
      a = np.random.default_rng(1).standard_normal((1000, 500))
      z[:, :] = a
      z.attrs['units'] = 'meters'
      z.attrs['description'] = 'Sensor measurements'
      z.attrs['created_by'] = 'Python zarr-python 2.16.0'
      open(sys.argv[1] + '.bin', 'wb').write(a[:100, :50].tobytes())
      """,
      [path]
    )

    {:ok, array} = ZarrBridge.open(storage: :filesystem, path: path)
    assert array.metadata.shape == {1000, 500}
    assert array.metadata.dtype == :float64
    assert array.metadata.chunks == {100, 50}
    assert array.metadata.compressor == :blosc

    assert array.metadata.compressor_config == [
             blocksize: 0,
             clevel: 3,
             cname: "zstd",
             shuffle: 1
           ]

    assert array.metadata.attributes["units"] == "meters"
    assert array.metadata.attributes["description"] == "Sensor measurements"
    assert array.metadata.attributes["created_by"] == "Python zarr-python 2.16.0"

    {:ok, data} = ZarrBridge.Array.get_slice(array, start: {0, 0}, stop: {100, 50})
    assert tuple_size(data) == 100 and tuple_size(elem(data, 0)) == 50
    expected = NDArray.new!(File.read!(path <> ".bin"), {100, 50}, :float64)
    assert data == NDArray.to_nested(expected)
    assert is_float(elem(elem(data, 0), 0))
  end

  test "the seed's Elixir-to-Python flow" do
    dir = tmp_dir("array")
    path = Path.join(dir, "results")

    {:ok, array} =
      ZarrBridge.create(
        shape: {500, 500},
        chunks: {50, 50},
        dtype: :int32,
        compressor: :zlib,
        storage: :filesystem,
        path: path,
        zarr_version: 2
      )

    data =
      for i <- 0..499 do
        for j <- 0..499 do
          i * 500 + j
        end
        |> List.to_tuple()
      end
      |> List.to_tuple()

    :ok = ZarrBridge.Array.set_slice(array, data, start: {0, 0}, stop: {500, 500})

    :ok =
      ZarrBridge.Array.put_attributes(array, %{
        "units" => "counts",
        "description" => "Processing results from Elixir pipeline",
        "created_by" => "ExZarr v1.0.0",
        "timestamp" => DateTime.utc_now() |> DateTime.to_iso8601()
      })

    out =
      Python.run!(
        """
        import sys, zarr, numpy as np
        z = zarr.open_array(sys.argv[1], mode='r')
        data = z[:]
        assert z.shape == (500, 500) and z.dtype == np.int32 and z.chunks == (50, 50)
        assert z.metadata.zarr_format == 2
        assert (data == np.arange(250000, dtype=np.int32).reshape(500, 500)).all()
        print(z.compressors[0].codec_id, z.attrs['units'], z.attrs['created_by'])
        """,
        [path]
      )

    assert out == "zlib counts ExZarr v1.0.0\n"
  end

  # ------------------------------------------------------------------
  # Options of create/open

  describe "create" do
    test "the default compressor is zarr-python's: zstd level 0, in both formats" do
      dir = tmp_dir("array")

      for format <- [2, 3] do
        path = Path.join(dir, "default-v#{format}")

        {:ok, array} =
          ZarrBridge.create(
            path: path,
            shape: {4},
            chunks: {2},
            dtype: :int16,
            zarr_version: format
          )

        assert array.metadata.compressor == :zstd
        assert Keyword.get(array.metadata.compressor_config, :level) == 0
      end

      {:ok, array} =
        ZarrBridge.create(
          path: Path.join(dir, "none"),
          shape: {4},
          dtype: :int16,
          compressor: nil
        )

      assert array.metadata.compressor == nil
      assert array.metadata.compressor_config == []
      assert array.metadata.zarr_format == 3
      assert array.metadata.chunks == {4}
    end

    test "fill_value, order, dimension_separator, filters (v2) read by zarr-python" do
      dir = tmp_dir("array")
      path = Path.join(dir, "v2")

      {:ok, array} =
        ZarrBridge.create(
          path: path,
          shape: {6, 5},
          chunks: {4, 2},
          dtype: :int32,
          zarr_version: 2,
          fill_value: -7,
          order: :f,
          dimension_separator: "/",
          filters: [:shuffle, {:delta, dtype: :int32}],
          compressor: {:zlib, level: 9}
        )

      meta = array.metadata
      assert meta.fill_value == -7
      assert meta.order == "F"
      assert meta.dimension_separator == "/"
      assert [{:shuffle, shuffle}, {:delta, delta}] = meta.filters
      assert shuffle[:elementsize] == 4
      assert delta[:dtype] in ["<i4", "int32"]
      assert meta.compressor_config == [level: 9]

      # write only part; the rest reads as the fill value
      :ok = Array.set_slice(array, {{1, 2}, {3, 4}}, start: {1, 1})

      assert Array.get_slice(array, start: {0, 0}, stop: {3, 3}) ==
               {:ok, {{-7, -7, -7}, {-7, 1, 2}, {-7, 3, 4}}}

      out =
        Python.run!(
          """
          import sys, zarr
          z = zarr.open_array(sys.argv[1], mode='r')
          print(z[0:3, 0:3].tolist(), z.metadata.order, z.metadata.dimension_separator,
                [f.codec_id for f in z.filters], z.fill_value)
          """,
          [path]
        )

      assert out == "[[-7, -7, -7], [-7, 1, 2], [-7, 3, 4]] F / ['shuffle', 'delta'] -7\n"
      # chunk keys use the separator: rows 0-3, columns 0-1 and 2-3 were written
      assert File.exists?(Path.join([path, "0", "0"]))
      assert File.exists?(Path.join([path, "0", "1"]))
      refute File.exists?(Path.join([path, "1", "0"]))
    end

    test "v3 options: shards, dimension names, separator, codecs, NaN fill" do
      dir = tmp_dir("array")
      sharded = Path.join(dir, "sharded")

      {:ok, array} =
        ZarrBridge.create(
          path: sharded,
          shape: {8, 8},
          chunks: {2, 2},
          shards: {4, 4},
          dtype: :float32,
          dimension_names: ["y", :x],
          dimension_separator: ".",
          fill_value: :nan,
          compressor: {:zstd, level: 1}
        )

      assert array.metadata.shards == {4, 4}
      assert array.metadata.chunks == {2, 2}
      assert array.metadata.dimension_names == ["y", "x"]
      assert array.metadata.dimension_separator == "."
      assert array.metadata.fill_value == :nan
      assert is_list(array.metadata.codecs)

      :ok = Array.set_slice(array, {{1.5, :infinity}}, start: {3, 3})

      assert Array.get_slice(array, start: {3, 2}, stop: {4, 6}) ==
               {:ok, {{:nan, 1.5, :infinity, :nan}}}

      explicit = Path.join(dir, "codecs")

      {:ok, array} =
        ZarrBridge.create(
          path: explicit,
          shape: {10},
          chunks: {4},
          dtype: :uint16,
          codecs: [
            %{"name" => "bytes", "configuration" => %{"endian" => "big"}},
            %{"name" => "gzip", "configuration" => %{"level" => 2}}
          ]
        )

      assert array.metadata.compressor == :gzip
      assert array.metadata.compressor_config == [level: 2]
      :ok = Array.write(array, NDArray.from_list!(Enum.to_list(1..10), {10}, :uint16))

      out =
        Python.run!(
          """
          import sys, zarr, numpy as np
          a = zarr.open_array(sys.argv[1], mode='r')
          b = zarr.open_array(sys.argv[2], mode='r')
          print(a.metadata.dimension_names, a.shards, a.chunks, np.isnan(a[0, 0]), a[3, 4])
          print(b[:].tolist(), [c.to_dict()['name'] for c in b.metadata.codecs])
          """,
          [sharded, explicit]
        )

      assert out ==
               "('y', 'x') (4, 4) (2, 2) True inf\n" <>
                 "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10] ['bytes', 'gzip']\n"
    end

    test "modes: w- refuses, w overwrites, a opens or creates, r/r+ open" do
      dir = tmp_dir("array")
      path = Path.join(dir, "modes")
      opts = [path: path, shape: {3}, dtype: :int8, chunks: {3}]

      {:ok, a} = ZarrBridge.create(opts)
      :ok = Array.set_slice(a, {1, 2, 3})

      assert {:error, %Error{code: :already_exists}} = ZarrBridge.create(opts)
      assert {:error, %Error{code: :already_exists}} = ZarrBridge.create(opts ++ [mode: :"w-"])

      {:ok, a} = ZarrBridge.create(Keyword.merge(opts, mode: :a, shape: {99}))
      assert a.metadata.shape == {3}
      assert Array.get_slice(a) == {:ok, {1, 2, 3}}

      {:ok, a} = ZarrBridge.create(Keyword.merge(opts, mode: :w, shape: {4}))
      assert a.metadata.shape == {4}
      assert Array.get_slice(a) == {:ok, {0, 0, 0, 0}}

      {:ok, _} = ZarrBridge.create(Keyword.put(opts, :path, Path.join(dir, "new")) ++ [mode: :a])
      assert {:ok, %Array{mode: :r}} = ZarrBridge.open(path: path, mode: :r)
      assert {:ok, %Array{mode: :"r+"}} = ZarrBridge.open(path: path)
      assert {:ok, %Array{mode: :a}} = ZarrBridge.open(path: path, mode: "a")
    end

    test "option errors raise ArgumentError" do
      dir = tmp_dir("array")
      base = [path: Path.join(dir, "x"), shape: {2}, dtype: :int8]

      for bad <- [
            Keyword.delete(base, :path),
            Keyword.delete(base, :shape),
            Keyword.delete(base, :dtype),
            base ++ [bogus: 1],
            base ++ [storage: :s3],
            base ++ [node: 1],
            base ++ [chunk_key_encoding: {:v3, "/"}],
            base ++ [chunk_key_encoding: {:default, "-"}],
            base ++ [zarr_version: 4],
            base ++ [mode: :x],
            base ++ [order: "Z"],
            base ++ [dimension_separator: "-"],
            Keyword.put(base, :shape, [2]),
            base ++ [chunks: {1.5}],
            base ++ [attributes: [1]]
          ] do
        assert_raise ArgumentError, fn -> ZarrBridge.create(bad) end
      end

      assert_raise ArgumentError, fn -> ZarrBridge.open(path: dir, mode: :w) end
      assert_raise ArgumentError, fn -> ZarrBridge.open(bogus: 1, path: dir) end
      assert_raise ArgumentError, fn -> ZarrBridge.open([]) end
      refute File.exists?(Path.join(dir, "x"))
    end

    test "relative paths are expanded against the current directory" do
      dir = tmp_dir("array")
      # a relative path to `dir` from the current directory (which the test
      # must not change: other tests run at the same time)
      up = File.cwd!() |> Path.split() |> tl() |> Enum.map(fn _ -> ".." end)
      relative = Path.join(up ++ [Path.relative_to(dir, "/"), "rel"])
      assert Path.type(relative) == :relative

      {:ok, array} = ZarrBridge.create(path: relative, shape: {1}, dtype: :int8)
      assert array.path == Path.join(dir, "rel")
      assert {:ok, %Array{path: path}} = ZarrBridge.open(path: relative)
      assert path == Path.join(dir, "rel")
      assert File.exists?(Path.join([dir, "rel", "zarr.json"]))
    end
  end

  # ------------------------------------------------------------------
  # Data paths

  describe "read and write" do
    test "large arrays: upload streams, handoff on and off" do
      dir = tmp_dir("array")
      path = Path.join(dir, "big")

      {:ok, array} =
        ZarrBridge.create(
          path: path,
          shape: {1024, 1024},
          chunks: {256, 256},
          dtype: :float64,
          compressor: :lz4
        )

      data = for(i <- 0..(1024 * 1024 - 1), into: <<>>, do: <<i * 0.5::float-little-64>>)
      assert :ok = Array.write(array, data, timeout: 60_000)

      assert {:ok, %NDArray{data: ^data}} = Array.read(array, timeout: 60_000)
      assert {:ok, %NDArray{data: ^data}} = Array.read(array, handoff: true, timeout: 60_000)
      assert {:ok, %NDArray{data: ^data}} = Array.read(array, handoff: false, timeout: 60_000)

      # a band read as a binary slice
      assert {:ok, band} = Array.read(array, start: {100, 0}, stop: {101, 1024})
      assert band.data == binary_part(data, 100 * 1024 * 8, 1024 * 8)

      out =
        Python.run!(
          """
          import sys, zarr, numpy as np
          z = zarr.open_array(sys.argv[1], mode='r')
          print(bool((z[:] == np.arange(1024 * 1024).reshape(1024, 1024) * 0.5).all()))
          """,
          [path]
        )

      assert out == "True\n"
      # (a handoff file goes right after its reply)
      assert ZarrBridge.Test.SidecarCase.eventually(fn ->
               not Enum.any?(Path.wildcard("/dev/shm/pybridge-*"), &leaked_by_us?/1)
             end)
    end

    test "write with a binary: stop gives the shape, or the binary fills the array" do
      dir = tmp_dir("array")

      {:ok, array} =
        ZarrBridge.create(path: Path.join(dir, "b"), shape: {4, 4}, chunks: {3, 3}, dtype: :uint8)

      assert :ok = Array.write(array, :binary.copy(<<9>>, 16))
      assert :ok = Array.write(array, <<1, 2, 3, 4>>, start: {1, 1}, stop: {3, 3})

      assert Array.get_slice(array) ==
               {:ok, {{9, 9, 9, 9}, {9, 1, 2, 9}, {9, 3, 4, 9}, {9, 9, 9, 9}}}

      assert {:error, %Error{code: :data_size_mismatch}} = Array.write(array, <<1, 2, 3>>)

      assert {:error, %Error{code: :data_size_mismatch}} =
               Array.write(array, <<1, 2, 3>>, start: {0, 0}, stop: {2, 2})

      assert {:error, %Error{code: :invalid_params}} = Array.write(array, <<1, 2>>, start: {1, 1})

      assert {:error, %Error{code: :invalid_params}} =
               Array.write(array, NDArray.from_list!([1], {1, 1}, :int8))

      assert {:error, %Error{code: :data_size_mismatch}} =
               Array.write(array, NDArray.from_list!([1], {1, 1}, :uint8),
                 start: {0, 0},
                 stop: {2, 2}
               )
    end

    test "more dtypes than the seed: float16, complex, datetime64, timedelta64" do
      dir = tmp_dir("array")

      cases = [
        {:float16, [1.5, :nan, :infinity, -0.5], "float16"},
        {:complex64, [{1.0, 2.0}, {:nan, 0.0}, {-1.0, :infinity}, {0.0, 0.0}], "complex64"},
        {:complex128, [{1.0e100, -2.0}, {0.5, 0.25}, {3.0, 0.0}, {0.0, -1.0}], "complex128"},
        {{:datetime64, :ns}, [0, 1_700_000_000_000_000_000, -9_223_372_036_854_775_808, 5],
         "datetime64[ns]"},
        {{:timedelta64, :s}, [1, -1, 3600, -9_223_372_036_854_775_808], "timedelta64[s]"}
      ]

      for {{dtype, values, _}, i} <- Enum.with_index(cases), format <- [2, 3] do
        path = Path.join(dir, "extra-#{i}-v#{format}")

        {:ok, array} =
          ZarrBridge.create(
            path: path,
            shape: {4},
            chunks: {3},
            dtype: dtype,
            zarr_version: format
          )

        assert array.metadata.dtype == dtype
        :ok = Array.set_slice(array, List.to_tuple(values))
        assert Array.get_slice(array) == {:ok, List.to_tuple(values)}
        File.write!(path <> ".bin", NDArray.from_list!(values, {4}, dtype).data)
      end

      out =
        Python.run!(
          """
          import sys, zarr, numpy as np, glob
          for path in sorted(glob.glob(sys.argv[1] + '/extra-*')):
              if path.endswith('.bin'):
                  continue
              a = zarr.open_array(path, mode='r')[:]
              assert a.astype(a.dtype.newbyteorder('<')).tobytes() == open(path + '.bin', 'rb').read(), path
              print(a.dtype)
          """,
          [dir]
        )

      assert out |> String.split() |> Enum.uniq() |> Enum.sort() ==
               Enum.sort(Enum.map(cases, &elem(&1, 2)))
    end

    test "a big-endian array written by zarr-python reads as little-endian values" do
      dir = tmp_dir("array")
      path = Path.join(dir, "be")

      Python.run!(
        """
        import sys, zarr, numpy as np
        z = zarr.create_array(sys.argv[1], shape=(5,), chunks=(2,), dtype='>f8', zarr_format=2)
        z[:] = np.array([1.5, -2.0, np.nan, 1e300, 0.0], dtype='>f8')
        """,
        [path]
      )

      {:ok, array} = ZarrBridge.open(path: path)
      assert array.metadata.dtype == :float64
      assert Array.get_slice(array) == {:ok, {1.5, -2.0, :nan, 1.0e300, 0.0}}
    end

    test "attributes: put replaces, update merges, the struct is a snapshot" do
      dir = tmp_dir("array")
      path = Path.join(dir, "attrs")

      {:ok, array} =
        ZarrBridge.create(path: path, shape: {1}, dtype: :int8, attributes: %{"a" => 1})

      assert array.metadata.attributes == %{"a" => 1}

      :ok = Array.put_attributes(array, %{"b" => [1, "x", nil], c: %{"d" => 2.5}})
      assert Array.get_attributes(array) == {:ok, %{"b" => [1, "x", nil], "c" => %{"d" => 2.5}}}
      :ok = Array.update_attributes(array, %{"b" => false, "e" => "é"})

      assert Array.get_attributes!(array) == %{"b" => false, "c" => %{"d" => 2.5}, "e" => "é"}
      # the snapshot is unchanged until refreshed
      assert array.metadata.attributes == %{"a" => 1}
      assert {:ok, fresh} = Array.refresh(array)
      assert fresh.metadata.attributes == %{"b" => false, "c" => %{"d" => 2.5}, "e" => "é"}
      assert fresh.mode == array.mode

      # zarr-python agrees, and its own changes are seen
      Python.run!(
        """
        import sys, zarr
        z = zarr.open_array(sys.argv[1], mode='r+')
        assert dict(z.attrs) == {'b': False, 'c': {'d': 2.5}, 'e': 'é'}, dict(z.attrs)
        z.attrs['from_python'] = [1, 2]
        """,
        [path]
      )

      assert {:ok, %{"from_python" => [1, 2]}} = Array.get_attributes(array)
      assert Array.refresh!(array).metadata.attributes["from_python"] == [1, 2]
    end
  end

  # ------------------------------------------------------------------
  # Errors

  describe "errors" do
    test ":not_found" do
      dir = tmp_dir("array")
      assert {:error, %Error{code: :not_found}} = ZarrBridge.open(path: Path.join(dir, "missing"))
      assert {:error, %Error{code: :not_found}} = ZarrBridge.open(path: dir)
      assert_raise Error, fn -> ZarrBridge.open!(path: dir) end

      # the array disappears after it was opened
      path = Path.join(dir, "gone")
      {:ok, array} = ZarrBridge.create(path: path, shape: {2}, dtype: :int8)
      File.rm_rf!(path)
      assert {:error, %Error{code: :not_found}} = Array.read(array)
    end

    test ":unsupported_dtype" do
      dir = tmp_dir("array")

      assert {:error, %Error{code: :unsupported_dtype}} =
               ZarrBridge.create(path: Path.join(dir, "a"), shape: {2}, dtype: :int128)

      # structured types hold fixed-size fields only
      assert {:error, %Error{code: :unsupported_dtype}} =
               ZarrBridge.create(
                 path: Path.join(dir, "b"),
                 shape: {2},
                 dtype: [{"name", :string}, {"x", :int8}]
               )

      refute File.exists?(Path.join(dir, "a"))
      refute File.exists?(Path.join(dir, "b"))
    end

    test ":codec_unavailable" do
      dir = tmp_dir("array")

      assert {:error, %Error{code: :codec_unavailable}} =
               ZarrBridge.create(
                 path: Path.join(dir, "a"),
                 shape: {2},
                 dtype: :int8,
                 compressor: :no_such_codec
               )

      path = Path.join(dir, "b")

      {:ok, _} =
        ZarrBridge.create(
          path: path,
          shape: {2},
          dtype: :int8,
          zarr_version: 2,
          compressor: :zlib
        )

      zarray = Path.join(path, ".zarray")
      File.write!(zarray, String.replace(File.read!(zarray), ~s("zlib"), ~s("no_such_codec")))
      assert {:error, %Error{code: :codec_unavailable}} = ZarrBridge.open(path: path)
    end

    test ":invalid_codec_config" do
      dir = tmp_dir("array")

      assert {:error, %Error{code: :invalid_codec_config}} =
               ZarrBridge.create(
                 path: Path.join(dir, "a"),
                 shape: {2},
                 dtype: :int8,
                 compressor: {:zlib, level: 42}
               )

      assert {:error, %Error{code: :invalid_codec_config}} =
               ZarrBridge.create(
                 path: Path.join(dir, "b"),
                 shape: {2},
                 dtype: :int8,
                 filters: [7]
               )
    end

    test ":invalid_selection" do
      dir = tmp_dir("array")

      {:ok, array} =
        ZarrBridge.create(path: Path.join(dir, "s"), shape: {4, 5}, chunks: {2, 2}, dtype: :int16)

      for {start, stop} <- [
            {{0, 0}, {5, 5}},
            {{0, 0}, {4, 6}},
            {{0}, {4}},
            {{-1, 0}, {2, 2}},
            {{3, 0}, {2, 2}}
          ] do
        assert {:error, %Error{code: :invalid_selection}} =
                 Array.get_slice(array, start: start, stop: stop),
               "#{inspect(start)}..#{inspect(stop)}"
      end

      assert {:error, %Error{code: :invalid_selection}} =
               Array.set_slice(array, {{1, 2}}, start: {3, 4})

      assert {:error, %Error{code: :invalid_selection}} =
               Array.set_slice(array, {1, 2}, start: {0, 0})
    end

    test ":data_size_mismatch" do
      dir = tmp_dir("array")
      {:ok, array} = ZarrBridge.create(path: Path.join(dir, "d"), shape: {4, 4}, dtype: :int32)

      assert {:error, %Error{code: :data_size_mismatch}} =
               Array.set_slice(array, {{1, 2}, {3, 4}}, start: {0, 0}, stop: {2, 3})

      assert {:error, %Error{code: :data_size_mismatch}} =
               Array.set_slice(array, {{1, 2}, {3}}, start: {0, 0})

      assert {:error, %Error{code: :data_size_mismatch}} = Array.write(array, <<0::32*15>>)
      assert_raise Error, fn -> Array.set_slice!(array, {{1}}, stop: {2, 2}) end
    end

    test ":read_only" do
      dir = tmp_dir("array")
      path = Path.join(dir, "ro")
      {:ok, _} = ZarrBridge.create(path: path, shape: {2}, dtype: :int8)
      {:ok, array} = ZarrBridge.open(path: path, mode: :r)

      assert {:error, %Error{code: :read_only}} = Array.set_slice(array, {1, 2})
      assert {:error, %Error{code: :read_only}} = Array.write(array, <<1, 2>>)
      assert {:error, %Error{code: :read_only}} = Array.put_attributes(array, %{"a" => 1})
      assert {:error, %Error{code: :read_only}} = Array.update_attributes(array, %{"a" => 1})
      assert Array.get_slice(array) == {:ok, {0, 0}}
      assert Array.get_attributes(array) == {:ok, %{}}
    end

    test ":already_exists" do
      dir = tmp_dir("array")
      path = Path.join(dir, "e")
      {:ok, _} = ZarrBridge.create(path: path, shape: {2}, dtype: :int8)

      assert {:error, %Error{code: :already_exists}} =
               ZarrBridge.create(path: path, shape: {2}, dtype: :int8, zarr_version: 2)

      assert_raise Error, fn -> ZarrBridge.create!(path: path, shape: {2}, dtype: :int8) end
    end

    test "bang variants and a sidecar that is not there" do
      dir = tmp_dir("array")
      array = ZarrBridge.create!(path: Path.join(dir, "bang"), shape: {2}, dtype: :int8)
      assert :ok = Array.set_slice!(array, {5, 6})
      assert Array.get_slice!(array) == {5, 6}
      assert %NDArray{data: <<5, 6>>} = Array.read!(array)
      assert :ok = Array.write!(array, <<7, 8>>)
      assert :ok = Array.put_attributes!(array, %{"x" => 1})
      assert :ok = Array.update_attributes!(array, %{"y" => 2})
      assert Array.get_attributes!(array) == %{"x" => 1, "y" => 2}

      assert {:error, %Error{}} = Array.read(array, server: :no_such_sidecar)
      assert {:error, %Error{}} = ZarrBridge.open(path: dir, server: :no_such_sidecar)
      assert_raise ArgumentError, fn -> Array.read(array, bogus: 1) end
      assert_raise ArgumentError, fn -> Array.read(array, handoff: :maybe) end
    end
  end

  # ------------------------------------------------------------------
  # Array operations: resize, append, raw chunks, steps; every dtype form

  describe "resize and append" do
    test "resize grows and shrinks in both formats, and zarr-python agrees" do
      dir = tmp_dir("array")

      for format <- [2, 3] do
        path = Path.join(dir, "resize-v#{format}")

        {:ok, array} =
          ZarrBridge.create(
            path: path,
            shape: {4, 4},
            chunks: {2, 2},
            dtype: :int32,
            zarr_version: format
          )

        :ok = Array.write(array, NDArray.from_list!(Enum.to_list(1..16), {4, 4}, :int32))
        assert {:ok, grown} = Array.resize(array, {6, 3})
        assert grown.metadata.shape == {6, 3} and array.metadata.shape == {4, 4}

        assert Array.get_slice(grown) ==
                 {:ok, {{1, 2, 3}, {5, 6, 7}, {9, 10, 11}, {13, 14, 15}, {0, 0, 0}, {0, 0, 0}}}

        assert {:ok, shrunk} = Array.resize(grown, {1, 1})
        assert Array.get_slice!(shrunk) == {{1}}
        assert Array.chunk_keys!(shrunk) == [if(format == 2, do: "0.0", else: "c/0/0")]
        # growing back shows the fill value where chunks were dropped
        assert Array.get_slice!(Array.resize!(shrunk, {2, 2})) == {{1, 2}, {5, 6}}
      end

      out =
        Python.run!(
          """
          import sys, zarr
          for fmt in (2, 3):
              z = zarr.open_array(f'{sys.argv[1]}/resize-v{fmt}', mode='r')
              print(z.shape, z[:].tolist())
          """,
          [dir]
        )

      assert out == "(2, 2) [[1, 2], [5, 6]]\n(2, 2) [[1, 2], [5, 6]]\n"
    end

    test "append along either axis, from NDArray or nested data, strings too" do
      dir = tmp_dir("array")

      for format <- [2, 3] do
        path = Path.join(dir, "append-v#{format}")

        {:ok, a} =
          ZarrBridge.create(
            path: path,
            shape: {2, 3},
            chunks: {2, 2},
            dtype: :float64,
            zarr_version: format
          )

        :ok = Array.set_slice(a, {{1.0, 2.0, 3.0}, {4.0, 5.0, 6.0}})
        assert {:ok, a} = Array.append(a, {{7.0, 8.0, 9.0}})
        assert a.metadata.shape == {3, 3}

        assert {:ok, a} =
                 Array.append(a, NDArray.from_list!([0.5, 0.25, :nan], {3, 1}, :float64), axis: 1)

        assert a.metadata.shape == {3, 4}

        assert Array.get_slice(a) ==
                 {:ok, {{1.0, 2.0, 3.0, 0.5}, {4.0, 5.0, 6.0, 0.25}, {7.0, 8.0, 9.0, :nan}}}

        # shapes that do not fit the other dimensions, and a bad axis
        assert {:error, %Error{}} = Array.append(a, {{1.0, 2.0}})
        assert {:error, %Error{}} = Array.append(a, {{1.0, 2.0, 3.0, 4.0}}, axis: 2)

        assert {:error, %Error{code: :invalid_params}} =
                 Array.append(a, NDArray.from_list!([1, 2, 3, 4], {1, 4}, :int8))

        {:ok, s} =
          ZarrBridge.create(
            path: path <> "-str",
            shape: {2},
            chunks: {2},
            dtype: :string,
            zarr_version: format
          )

        :ok = Array.set_slice(s, {"a", "b"})
        assert {:ok, s} = Array.append(s, NDArray.from_list!(["ç", "", "日本"], {3}, :string))
        assert Array.get_slice(s) == {:ok, {"a", "b", "ç", "", "日本"}}
      end

      out =
        Python.run!(
          """
          import sys, zarr
          for fmt in (2, 3):
              z = zarr.open_array(f'{sys.argv[1]}/append-v{fmt}', mode='r')
              s = zarr.open_array(f'{sys.argv[1]}/append-v{fmt}-str', mode='r')
              print(z.shape, z[2, :3].tolist(), z[:2, 3].tolist(), list(s[:]))
          """,
          [dir]
        )

      assert out ==
               String.duplicate(
                 "(3, 4) [7.0, 8.0, 9.0] [0.5, 0.25] ['a', 'b', 'ç', '', '日本']\n",
                 2
               )
    end

    test "a read-only array cannot be resized or appended to" do
      dir = tmp_dir("array")
      path = Path.join(dir, "ro")
      {:ok, _} = ZarrBridge.create(path: path, shape: {2}, dtype: :int8)
      {:ok, ro} = ZarrBridge.open(path: path, mode: :r)
      assert {:error, %Error{code: :read_only}} = Array.resize(ro, {4})
      assert {:error, %Error{code: :read_only}} = Array.append(ro, {1})
      assert {:error, %Error{code: :read_only}} = Array.write_chunk_raw(ro, "c/0", <<>>)
      assert_raise ArgumentError, fn -> Array.resize(ro, [4]) end
      assert_raise ArgumentError, fn -> Array.append(ro, {1}, axis: -1) end
      assert_raise Error, fn -> Array.resize!(ro, {4}) end
    end
  end

  describe "raw chunks" do
    test "keys by every chunk key encoding; coordinates name the same chunk" do
      dir = tmp_dir("array")

      # {format, create options, expected keys of a 4×4 array in 2×2 chunks}
      encodings = [
        {2, [], ~w(0.0 0.1 1.0 1.1)},
        {2, [dimension_separator: "/"], ~w(0/0 0/1 1/0 1/1)},
        {3, [], ~w(c/0/0 c/0/1 c/1/0 c/1/1)},
        {3, [chunk_key_encoding: {:default, "."}], ~w(c.0.0 c.0.1 c.1.0 c.1.1)},
        {3, [chunk_key_encoding: {:v2, "."}], ~w(0.0 0.1 1.0 1.1)},
        {3, [chunk_key_encoding: {:v2, "/"}], ~w(0/0 0/1 1/0 1/1)},
        {3, [chunk_key_encoding: :v2], ~w(0.0 0.1 1.0 1.1)}
      ]

      data = NDArray.from_list!(Enum.to_list(1..16), {4, 4}, :uint16)

      for {{format, opts, keys}, i} <- Enum.with_index(encodings) do
        path = Path.join(dir, "keys-#{i}")
        base = [shape: {4, 4}, chunks: {2, 2}, dtype: :uint16, zarr_version: format]
        {:ok, a} = ZarrBridge.create([path: path] ++ base ++ opts)
        :ok = Array.write(a, data)
        assert Array.chunk_keys(a) == {:ok, keys}, inspect(opts)

        for {key, coords} <- Enum.zip(keys, [{0, 0}, {0, 1}, {1, 0}, {1, 1}]) do
          raw = File.read!(Path.join(path, key))
          assert ZarrBridge.Metadata.chunk_key(a.metadata, coords) == key
          assert Array.read_chunk_raw(a, key) == {:ok, raw}
          assert Array.read_chunk_raw(a, coords) == {:ok, raw}
        end

        # a copy made chunk by chunk, the raw bytes as they are
        {:ok, b} = ZarrBridge.create([path: path <> "-copy"] ++ base ++ opts)

        for coords <- [{0, 0}, {0, 1}, {1, 0}, {1, 1}] do
          assert :ok = Array.write_chunk_raw(b, coords, Array.read_chunk_raw!(a, coords))
        end

        assert Array.read(b) == {:ok, data}
      end

      out =
        Python.run!(
          """
          import sys, glob, zarr
          for path in sorted(glob.glob(sys.argv[1] + '/keys-*-copy')):
              print(int(zarr.open_array(path, mode='r')[:].sum()))
          """,
          [dir]
        )

      assert out == String.duplicate("136\n", length(encodings))
    end

    test "missing chunks, fill-only chunks, bad coordinates and keys that are not chunks" do
      dir = tmp_dir("array")

      {:ok, a} =
        ZarrBridge.create(path: Path.join(dir, "m"), shape: {6}, chunks: {2}, dtype: :int8)

      :ok = Array.set_slice(a, {1, 2, 0, 0, 3, 0})
      # the all-zero chunk is not stored (zarr-python's write_empty_chunks=False)
      assert Array.chunk_keys(a) == {:ok, ["c/0", "c/2"]}
      assert {:error, %Error{code: :not_found}} = Array.read_chunk_raw(a, {1})
      assert {:error, %Error{code: :not_found}} = Array.read_chunk_raw(a, "c/9")
      assert {:error, %Error{code: :invalid_selection}} = Array.read_chunk_raw(a, {0, 0})
      # a key must be one of the array's chunk keys: nothing else is reachable
      assert {:error, %Error{code: :invalid_params}} = Array.read_chunk_raw(a, "../m/zarr.json")
      assert {:error, %Error{code: :invalid_params}} = Array.read_chunk_raw(a, "zarr.json")
      assert {:error, %Error{code: :invalid_params}} = Array.write_chunk_raw(a, "../x", "x")

      assert {:error, %Error{code: :invalid_params}} =
               Array.write_chunk_raw(a, "c/0/../../x", "x")

      assert_raise ArgumentError, fn -> Array.read_chunk_raw(a, {-1}) end
      assert_raise ArgumentError, fn -> Array.read_chunk_raw(a, 3) end
      assert_raise Error, fn -> Array.read_chunk_raw!(a, {1}) end

      # a raw chunk larger than a stream frame goes up as a stream
      {:ok, big} =
        ZarrBridge.create(
          path: Path.join(dir, "big"),
          shape: {400_000},
          dtype: :uint8,
          compressor: nil
        )

      bytes = :rand.bytes(400_000)
      assert :ok = Array.write_chunk_raw!(big, {0}, bytes)
      assert Array.read_chunk_raw(big, {0}) == {:ok, bytes}
      assert Array.read(big) == {:ok, NDArray.new!(bytes, {400_000}, :uint8)}
    end

    test "sharded arrays: keys are shards, partially written, inner chunks missing" do
      dir = tmp_dir("array")
      path = Path.join(dir, "sharded")

      {:ok, a} =
        ZarrBridge.create(
          path: path,
          shape: {8, 8},
          chunks: {2, 2},
          shards: {4, 4},
          dtype: :int32
        )

      :ok = Array.set_slice(a, {{1, 2}, {3, 4}}, start: {0, 0})
      :ok = Array.set_slice(a, {{5}}, start: {7, 7})
      assert Array.chunk_keys(a) == {:ok, ["c/0/0", "c/1/1"]}
      {:ok, shard} = Array.read_chunk_raw(a, {1, 1})
      assert shard == File.read!(Path.join(path, "c/1/1"))
      full = Array.get_slice!(a)
      assert elem(elem(full, 0), 0) == 1 and elem(elem(full, 7), 7) == 5
      assert elem(elem(full, 3), 3) == 0
    end
  end

  describe "selection steps" do
    test "get_slice and read take step: with start and stop" do
      dir = tmp_dir("array")

      for format <- [2, 3] do
        {:ok, a} =
          ZarrBridge.create(
            path: Path.join(dir, "step-v#{format}"),
            shape: {7, 9},
            chunks: {3, 4},
            dtype: :int16,
            zarr_version: format
          )

        :ok = Array.write(a, NDArray.from_list!(Enum.to_list(0..62), {7, 9}, :int16))

        assert Array.get_slice(a, step: {3, 4}) == {:ok, {{0, 4, 8}, {27, 31, 35}, {54, 58, 62}}}

        assert Array.get_slice(a, start: {1, 1}, stop: {6, 8}, step: {2, 3}) ==
                 {:ok, {{10, 13, 16}, {28, 31, 34}, {46, 49, 52}}}

        assert {:ok, %NDArray{shape: {1, 1}}} = Array.read(a, start: {6, 8}, step: {5, 5})

        assert {:ok, %NDArray{shape: {0, 9}}} =
                 Array.read(a, start: {3, 0}, stop: {3, 9}, step: {2, 1})

        assert {:error, %Error{code: :invalid_selection}} = Array.read(a, step: {0, 1})
        assert {:error, %Error{code: :invalid_selection}} = Array.read(a, step: {1})
        assert {:error, %Error{code: :invalid_selection}} = Array.read(a, step: [1, 1])
      end
    end
  end

  describe "every dtype" do
    test "variable-length strings and bytes: lists of binaries, both formats, zarr-python agrees" do
      dir = tmp_dir("array")

      strings = ["", "a", "日本語", "😀 emoji", String.duplicate("x", 300), "tab\tnew\nline"]
      bytes = ["", <<0>>, <<255, 0, 1>>, "plain", :binary.copy(<<7>>, 1000), <<0, 0>>]

      for format <- [2, 3], {dtype, values} <- [string: strings, bytes: bytes] do
        path = Path.join(dir, "#{dtype}-v#{format}")

        {:ok, a} =
          ZarrBridge.create(
            path: path,
            shape: {2, 3},
            chunks: {1, 2},
            dtype: dtype,
            zarr_version: format
          )

        assert a.metadata.dtype == dtype
        nd = NDArray.from_list!(values, {2, 3}, dtype)
        :ok = Array.write(a, nd)
        assert Array.read(a) == {:ok, nd}
        # a partial write across chunks, with nested data
        :ok = Array.set_slice(a, {{"p", "q"}}, start: {1, 1})
        {:ok, got} = Array.get_slice(a)
        assert got == {List.to_tuple(Enum.take(values, 3)), {Enum.at(values, 3), "p", "q"}}

        first_row_stepped = {{Enum.at(values, 0), Enum.at(values, 2)}}
        assert Array.get_slice(a, stop: {1, 3}, step: {1, 2}) == {:ok, first_row_stepped}
      end

      out =
        Python.run!(
          Python.prelude() <>
            """
            for fmt in (2, 3):
                for dt in ('string', 'bytes'):
                    z = zarr.open_array(f'{sys.argv[1]}/{dt}-v{fmt}', mode='r')
                    print(fmt, dt, sha(dump(z[...])))
            """,
          [dir]
        )

      for format <- [2, 3], {dtype, values} <- [string: strings, bytes: bytes] do
        values = List.replace_at(values, 4, "p") |> List.replace_at(5, "q")

        hash =
          :crypto.hash(:sha256, Python.dump(NDArray.from_list!(values, {6}, dtype)))
          |> Base.encode16(case: :lower)

        assert out =~ "#{format} #{dtype} #{hash}\n"
      end

      # wrong element types are refused before anything is sent
      {:ok, s} = ZarrBridge.open(path: Path.join(dir, "string-v3"))
      assert {:error, %Error{code: :invalid_params}} = Array.set_slice(s, {{<<255>>}})
      assert {:error, %Error{code: :invalid_params}} = Array.set_slice(s, {{1}})
    end

    test "structured dtypes: records as maps, both formats, zarr-python agrees" do
      dir = tmp_dir("array")
      dtype = [{"id", :int32}, {"x", :float64}, {"tag", {:fixed_bytes, 3}}, {"c", :complex64}]

      records = [
        %{"id" => 1, "x" => 1.5, "tag" => "ab", "c" => {1.0, -1.0}},
        %{"id" => -2, "x" => :nan, "tag" => "", "c" => {0.0, 0.0}},
        %{"id" => 3, "x" => -0.25, "tag" => "xyz", "c" => {2.5, :infinity}}
      ]

      for format <- [2, 3] do
        path = Path.join(dir, "rec-v#{format}")

        {:ok, a} =
          ZarrBridge.create(
            path: path,
            shape: {3},
            chunks: {2},
            dtype: dtype,
            zarr_version: format
          )

        assert a.metadata.dtype == dtype
        :ok = Array.set_slice(a, List.to_tuple(records))
        assert Array.get_slice(a) == {:ok, List.to_tuple(records)}
        assert Array.get_slice(a, start: {1}, step: {2}) == {:ok, {Enum.at(records, 1)}}
      end

      out =
        Python.run!(
          """
          import sys, zarr
          for fmt in (2, 3):
              z = zarr.open_array(f'{sys.argv[1]}/rec-v{fmt}', mode='r')
              r = z[:]
              print(fmt, z.dtype.names, r['id'].tolist(), r['tag'].tolist(), r['c'][2])
          """,
          [dir]
        )

      line = "('id', 'x', 'tag', 'c') [1, -2, 3] [b'ab', b'', b'xyz'] (2.5+infj)\n"
      assert out == "2 " <> line <> "3 " <> line
    end

    test "fixed-size bytes and unicode, fill values of every kind" do
      dir = tmp_dir("array")

      cases = [
        {{:fixed_bytes, 4}, ["ab", "", "abcd", <<0, 1>>], "zz"},
        {{:fixed_unicode, 3}, ["ab", "", "日本語", "é"], "∅"},
        {{:datetime64, :ms}, [0, 1, -9_223_372_036_854_775_808, 42], -9_223_372_036_854_775_808},
        {:complex128, [{1.0, 2.0}, {0.0, 0.0}, {:nan, 1.0}, {-1.0, 0.5}], {1.5, -2.0}},
        {:bool, [true, false, true, true], true},
        {:float16, [0.5, -2.0, 65504.0, :neg_infinity], :nan},
        {[{"n", :int16}, {"b", {:fixed_bytes, 2}}],
         for(i <- 1..4, do: %{"n" => -i, "b" => String.duplicate("b", rem(i, 3))}),
         %{"n" => 5, "b" => "q"}}
      ]

      for {{dtype, values, fill}, i} <- Enum.with_index(cases), format <- [2, 3] do
        path = Path.join(dir, "fixed-#{i}-v#{format}")

        {:ok, a} =
          ZarrBridge.create(
            path: path,
            shape: {6},
            chunks: {4},
            dtype: dtype,
            fill_value: fill,
            zarr_version: format
          )

        assert a.metadata.fill_value == fill, "#{inspect(dtype)} v#{format}"
        :ok = Array.set_slice(a, List.to_tuple(values))
        # the last two elements were never written: the fill value
        expected = values ++ [fill, fill]
        {:ok, got} = Array.get_slice(a)
        assert NDArray.from_nested!(got, dtype) == NDArray.from_list!(expected, {6}, dtype)
        {:ok, again} = ZarrBridge.open(path: path)
        assert again.metadata.fill_value == fill
      end
    end

    test "every spelling real writers produce: <u1 (tensorstore), big-endian, order F" do
      dir = tmp_dir("array")

      Python.run!(
        Python.prelude() <>
          """
          import tensorstore as ts
          root = sys.argv[1]
          # tensorstore writes uint8 as '<u1', which zarr-python 3.1 cannot open
          t = ts.open({'driver': 'zarr', 'kvstore': {'driver': 'file', 'path': root + '/ts-u1'},
                       'metadata': {'dtype': '<u1', 'shape': [5], 'chunks': [2]}},
                      create=True).result()
          t.write(np.array([1, 2, 3, 254, 255], dtype='u1')).result()
          print(json.load(open(root + '/ts-u1/.zarray'))['dtype'])
          # big-endian v2 dtypes
          for name, dt, vals in [('be-i4', '>i4', [1, -2, 3]), ('be-u2', '>u2', [1, 65535, 3]),
                                 ('be-c16', '>c16', [1 + 2j, complex(0, -1), 0]),
                                 ('be-M8', '>M8[s]', [0, 86400, -1])]:
              z = zarr.create_array(f'{root}/{name}', shape=(3,), chunks=(2,), dtype=dt, zarr_format=2)
              z[:] = np.array(vals).astype(dt) if dt[1] != 'M' else np.array(vals, dtype='i8').astype(dt)
          # a little-endian bool spelled '|b1' and a v3 big-endian bytes codec
          z = zarr.create_array(root + '/v3-be', shape=(3,), chunks=(2,), dtype='float32',
                                serializer={'name': 'bytes', 'configuration': {'endian': 'big'}})
          z[:] = [1.5, -2.5, 3.25]
          # v2 order F
          z = zarr.create_array(root + '/order-f', shape=(3, 4), chunks=(2, 3), dtype='int16',
                                order='F', zarr_format=2)
          z[:] = np.arange(12, dtype='int16').reshape(3, 4)
          """,
        [dir]
      )
      |> then(&assert(&1 == "<u1\n"))

      expect = fn name, dtype, list ->
        {:ok, a} = ZarrBridge.open(path: Path.join(dir, name))
        assert a.metadata.dtype == dtype, name
        assert NDArray.to_list(Array.read!(a)) == list, name
        a
      end

      a = expect.("ts-u1", :uint8, [1, 2, 3, 254, 255])
      # ... and Elixir writes into it; tensorstore still reads it
      :ok = Array.set_slice(a, {9}, start: {4})
      expect.("be-i4", :int32, [1, -2, 3])
      expect.("be-u2", :uint16, [1, 65535, 3])
      expect.("be-c16", :complex128, [{1.0, 2.0}, {0.0, -1.0}, {0.0, 0.0}])
      expect.("be-M8", {:datetime64, :s}, [0, 86400, -1])
      b = expect.("v3-be", :float32, [1.5, -2.5, 3.25])
      :ok = Array.set_slice(b, {-1.0}, start: {2})
      f = expect.("order-f", :int16, Enum.to_list(0..11))
      assert f.metadata.order == "F"
      assert Array.get_slice(f, start: {1, 1}, stop: {3, 3}) == {:ok, {{5, 6}, {9, 10}}}
      :ok = Array.set_slice(f, {{-5, -6}}, start: {1, 1})

      out =
        Python.run!(
          Python.prelude() <>
            """
            import tensorstore as ts
            root = sys.argv[1]
            t = ts.open({'driver': 'zarr', 'kvstore': {'driver': 'file', 'path': root + '/ts-u1'}}).result()
            print(t.read().result().tolist())
            print(zarr.open_array(root + '/v3-be', mode='r')[:].tolist())
            print(zarr.open_array(root + '/order-f', mode='r')[1].tolist())
            """,
          [dir]
        )

      assert out == "[1, 2, 3, 254, 9]\n[1.5, -2.5, -1.0]\n[4, -5, -6, 7]\n"
    end
  end

  # ------------------------------------------------------------------
  # helpers

  # A handed-over result ("read" segment) of the default sidecar that the
  # client did not unlink. (Its workers' own buffers live as long as it.)
  defp leaked_by_us?(path) do
    case ZarrBridge.Sidecar.os_pid!(ZarrBridge.Sidecar) do
      nil -> false
      pid -> String.starts_with?(Path.basename(path), "pybridge-#{pid}-read-")
    end
  end

  # Elixir-side data: random values with the extremes and the float specials.
  defp gen(dtype, shape, seed) do
    :rand.seed(:exsss, {seed, 17, 42})
    n = NDArray.size(shape)

    specials =
      case dtype do
        :bool -> [true, false]
        d when d in [:float32, :float64] -> [:nan, :infinity, :neg_infinity, -0.0]
        :int8 -> [-128, 127]
        :int16 -> [-32_768, 32_767]
        :int32 -> [-2_147_483_648, 2_147_483_647]
        :int64 -> [-9_223_372_036_854_775_808, 9_223_372_036_854_775_807]
        :uint8 -> [0, 255]
        :uint16 -> [0, 65_535]
        :uint32 -> [0, 4_294_967_295]
        :uint64 -> [0, 18_446_744_073_709_551_615]
      end

    random =
      for _ <- 1..max(n, 1) do
        case dtype do
          :bool -> :rand.uniform(2) == 1
          d when d in [:float32, :float64] -> :rand.normal() * 1000
          d -> random_int(d)
        end
      end

    (specials ++ random) |> Enum.take(n) |> NDArray.from_list!(shape, dtype)
  end

  defp random_int(dtype) do
    {bits, signed} =
      %{int8: {8, true}, int16: {16, true}, int32: {32, true}, int64: {64, true}}
      |> Map.merge(%{
        uint8: {8, false},
        uint16: {16, false},
        uint32: {32, false},
        uint64: {64, false}
      })
      |> Map.fetch!(dtype)

    n = :rand.uniform(Bitwise.bsl(1, bits)) - 1
    if signed, do: n - Bitwise.bsl(1, bits - 1), else: n
  end

  # A box inside the array that crosses chunk edges: [1, dim - 1) or the
  # whole dimension when it is short.
  defp inner_box(shape) do
    dims = Tuple.to_list(shape)
    start = Enum.map(dims, &if(&1 > 2, do: 1, else: 0))
    stop = Enum.map(dims, &if(&1 > 2, do: &1 - 1, else: &1))
    {List.to_tuple(start), List.to_tuple(stop)}
  end

  defp sub(a, b) do
    Enum.zip_with(Tuple.to_list(a), Tuple.to_list(b), &(&1 - &2)) |> List.to_tuple()
  end

  # All indices of a shape, in C order.
  defp indices(shape) do
    shape
    |> Tuple.to_list()
    |> Enum.reduce([[]], fn dim, acc -> for idx <- acc, i <- 0..(dim - 1)//1, do: idx ++ [i] end)
  end

  defp inside?(idx, start, stop) do
    Enum.zip([idx, Tuple.to_list(start), Tuple.to_list(stop)])
    |> Enum.all?(fn {i, a, b} -> i >= a and i < b end)
  end

  defp slice(%NDArray{} = nd, start, stop) do
    values =
      Enum.zip(indices(nd.shape), NDArray.to_list(nd))
      |> Enum.filter(fn {idx, _} -> inside?(idx, start, stop) end)
      |> Enum.map(&elem(&1, 1))

    NDArray.from_list!(values, sub(stop, start), nd.dtype)
  end

  defp paste(%NDArray{} = nd, %NDArray{} = patch, start) do
    stop = add(start, patch.shape)

    {values, []} =
      Enum.zip(indices(nd.shape), NDArray.to_list(nd))
      |> Enum.map_reduce(NDArray.to_list(patch), fn {idx, value}, rest ->
        if inside?(idx, start, stop), do: {hd(rest), tl(rest)}, else: {value, rest}
      end)

    NDArray.from_list!(values, nd.shape, nd.dtype)
  end

  defp add(a, b),
    do: Enum.zip_with(Tuple.to_list(a), Tuple.to_list(b), &(&1 + &2)) |> List.to_tuple()
end
