defmodule ZarrBridge.InteropMatrixTest do
  # The both-ways interop matrix (issue 5): {v2, v3} × every dtype × every
  # numcodecs codec that applies to it × {filesystem, zip, memory} × the v3
  # layouts (sharded, transposed, dimension-named, both chunk key encodings,
  # big-endian bytes, crc32c) and the v2 ones (C/F order, both separators),
  # with the arrays inside groups and half of the containers consolidated.
  #
  #   * zarr-python writes, Elixir reads: one Python process writes every
  #     case and dumps what zarr-python reads back; Elixir opens each array
  #     (by node path or through ZarrBridge.Group), checks its metadata and
  #     compares its data, a stepped read and a raw chunk exactly.
  #   * Elixir writes, zarr-python (and tensorstore, where it has the codec)
  #     reads: Elixir creates every case through ZarrBridge.Group, writes
  #     and reads back; one Python process reads each array and prints the
  #     SHA-256 of its dump and the codecs it found.
  #   * Memory stores live inside the sidecar, so no other reader can see
  #     them: every dtype round-trips through one.
  #   * json2, msgpack2, pickle, categorize and vlen-array are numcodecs
  #     codecs that zarr-python 3.1 cannot put in an array ("No Zarr data
  #     type found" for an object dtype with those object codecs): they go
  #     both ways at the codec level instead.
  #
  # The product is sampled (every recipe with a rotating dtype, every dtype
  # with a rotating recipe, layouts and stores rotating), and the first test
  # asserts that every dtype, codec, layout and store still appears in both
  # directions, so dropping a case fails.
  use ExUnit.Case, async: true

  import ZarrBridge.Test.TmpDir

  alias ZarrBridge.{Array, Codecs, Dtype, Group, NDArray}
  alias ZarrBridge.Test.Python

  @moduletag timeout: 300_000

  @seed_ten [:int8, :int16, :int32, :int64, :uint8, :uint16, :uint32, :uint64, :float32, :float64]
  @struct [{"id", :int32}, {"x", :float64}, {"tag", {:fixed_bytes, 3}}]
  @dtypes @seed_ten ++
            [
              :bool,
              :float16,
              :complex64,
              :complex128,
              {:datetime64, :ns},
              {:timedelta64, :s},
              {:fixed_bytes, 5},
              {:fixed_unicode, 4},
              :string,
              :bytes,
              @struct
            ]

  @ints [:int8, :int16, :int32, :int64, :uint8, :uint16, :uint32, :uint64]
  @floats [:float16, :float32, :float64]
  @numeric @ints ++ @floats ++ [:bool, :complex64, :complex128]
  @variable [:string, :bytes]

  # Every numcodecs codec: those zarr-python can put in an array, and the
  # object codecs it cannot (checked against numcodecs' registry below).
  @array_codec_ids ~w(adler32 astype base64 bitround blosc bz2 crc32 crc32c delta
                      fixedscaleoffset fletcher32 gzip jenkins_lookup3 lz4 lzma packbits
                      pcodec quantize shuffle vlen-bytes vlen-utf8 zfpy zlib zstd)
  @object_codec_ids ~w(categorize json2 msgpack2 pickle vlen-array)

  # How a case stores its chunks. `applies`: :any, :fixed (not
  # variable-length) or a list of dtypes. `filters` and `compressor` are
  # numcodecs configs; Elixir gives them without the keys the dtype implies
  # (shuffle's elementsize, delta's dtype...), which ZarrBridge.create fills
  # in, and zarr-python gets them complete. `serializer`: a v3 array-to-bytes
  # numcodecs codec. `lossy`: the decoded data differs from what was
  # written, so both sides compare decoded against decoded.
  @recipes [
    %{name: "none", ids: []},
    %{name: "zlib", ids: ~w(zlib), compressor: %{"id" => "zlib", "level" => 1}},
    %{name: "gzip", ids: ~w(gzip), compressor: %{"id" => "gzip", "level" => 5}},
    %{name: "bz2", ids: ~w(bz2), compressor: %{"id" => "bz2", "level" => 1}},
    %{name: "lzma", ids: ~w(lzma), compressor: %{"id" => "lzma"}},
    %{name: "lz4", ids: ~w(lz4), compressor: %{"id" => "lz4", "acceleration" => 1}},
    %{name: "zstd", ids: ~w(zstd), compressor: %{"id" => "zstd", "level" => 3}},
    %{
      name: "blosc-lz4-shuffle",
      ids: ~w(blosc),
      compressor: %{"id" => "blosc", "cname" => "lz4", "clevel" => 5, "shuffle" => 1}
    },
    %{
      name: "blosc-zstd-bitshuffle",
      ids: ~w(blosc),
      compressor: %{"id" => "blosc", "cname" => "zstd", "clevel" => 3, "shuffle" => 2}
    },
    %{
      name: "blosc-blosclz-noshuffle",
      ids: ~w(blosc),
      compressor: %{"id" => "blosc", "cname" => "blosclz", "clevel" => 9, "shuffle" => 0}
    },
    %{
      name: "blosc-zlib",
      ids: ~w(blosc),
      compressor: %{"id" => "blosc", "cname" => "zlib", "clevel" => 1, "shuffle" => 1}
    },
    %{
      name: "blosc-lz4hc",
      ids: ~w(blosc),
      compressor: %{"id" => "blosc", "cname" => "lz4hc", "clevel" => 4, "shuffle" => 0}
    },
    %{
      name: "shuffle",
      ids: ~w(shuffle zlib),
      applies: :fixed,
      filters: [%{"id" => "shuffle"}],
      compressor: %{"id" => "zlib", "level" => 1}
    },
    %{
      name: "crc32-adler32",
      ids: ~w(crc32 adler32 zstd),
      filters: [%{"id" => "crc32"}, %{"id" => "adler32"}],
      compressor: %{"id" => "zstd", "level" => 1}
    },
    %{
      name: "fletcher-jenkins-crc32c",
      ids: ~w(fletcher32 jenkins_lookup3 crc32c),
      filters: [%{"id" => "fletcher32"}, %{"id" => "jenkins_lookup3"}],
      compressor: %{"id" => "crc32c"}
    },
    # numcodecs.base64 has no zarr-python v3 codec: v2 only.
    %{name: "base64", ids: ~w(base64), formats: [2], filters: [%{"id" => "base64"}]},
    %{
      name: "delta",
      ids: ~w(delta zlib),
      applies: @ints,
      filters: [%{"id" => "delta"}],
      compressor: %{"id" => "zlib", "level" => 1}
    },
    %{
      name: "fixedscaleoffset",
      ids: ~w(fixedscaleoffset),
      applies: [:float32, :float64],
      filters: [%{"id" => "fixedscaleoffset", "offset" => 0, "scale" => 100, "astype" => "int64"}],
      lossy: true
    },
    %{
      name: "quantize",
      ids: ~w(quantize zstd),
      applies: [:float32, :float64],
      filters: [%{"id" => "quantize", "digits" => 3}],
      compressor: %{"id" => "zstd", "level" => 1},
      lossy: true
    },
    %{
      name: "bitround",
      ids: ~w(bitround),
      applies: [:float32, :float64],
      filters: [%{"id" => "bitround", "keepbits" => 8}],
      lossy: true
    },
    %{
      name: "astype",
      ids: ~w(astype),
      applies: [:float32],
      filters: [%{"id" => "astype", "encode_dtype" => "float64", "decode_dtype" => "float32"}]
    },
    %{name: "packbits", ids: ~w(packbits), applies: [:bool], filters: [%{"id" => "packbits"}]},
    %{
      name: "pcodec",
      ids: ~w(pcodec),
      applies: [:int32, :int64, :uint32, :uint64, :float32, :float64],
      serializer: %{"id" => "pcodec", "level" => 8}
    },
    %{
      name: "zfpy",
      ids: ~w(zfpy),
      applies: [:float32, :float64],
      serializer: %{"id" => "zfpy", "mode" => 4, "tolerance" => 0.001},
      lossy: true
    },
    %{
      name: "vlen-utf8",
      ids: ~w(vlen-utf8 zstd),
      applies: [:string],
      compressor: %{"id" => "zstd", "level" => 1}
    },
    %{
      name: "vlen-bytes",
      ids: ~w(vlen-bytes gzip),
      applies: [:bytes],
      compressor: %{"id" => "gzip", "level" => 1}
    }
  ]

  @recipe_defaults %{
    applies: :any,
    formats: [2, 3],
    filters: [],
    compressor: nil,
    serializer: nil,
    lossy: false
  }

  # Memory stores: every dtype, with lossless recipes in turn.
  @memory_dtypes @dtypes
  @memory_recipes ~w(zlib zstd blosc-lz4-shuffle crc32-adler32 none gzip lz4)

  @v2_layouts [:c, :f, :slash]
  @v3_layouts [:plain, :sharded, :transposed, :named, :cke_v2, :cke_dot, :big_endian, :crc32c]
  @stores [:filesystem, :zip]

  # The v3 codecs tensorstore reads, and the v2 compressors.
  @ts_v3 ~w(bytes transpose sharding_indexed gzip zstd blosc crc32c)
  @ts_v2 [nil, "zlib", "gzip", "bz2", "zstd", "blosc"]

  # ------------------------------------------------------------------
  # the case list

  defp recipes, do: Enum.map(@recipes, &Map.merge(@recipe_defaults, &1))

  defp applies?(%{applies: :any}, _dtype), do: true
  defp applies?(%{applies: :fixed}, dtype), do: dtype not in @variable
  defp applies?(%{applies: dtypes}, dtype), do: dtype in dtypes

  # Every recipe in each format it has, with a dtype it applies to (rotating
  # with `offset`); every dtype in both formats, with a recipe (rotating).
  defp pairs(offset) do
    by_recipe =
      for {r, i} <- Enum.with_index(recipes()), format <- r.formats do
        dtypes = Enum.filter(@dtypes, &applies?(r, &1))
        {format, Enum.at(dtypes, rem(i * 3 + offset + format, length(dtypes))), r}
      end

    by_dtype =
      for {dtype, i} <- Enum.with_index(@dtypes), format <- [2, 3] do
        rs = Enum.filter(recipes(), &(applies?(&1, dtype) and format in &1.formats))
        {format, dtype, Enum.at(rs, rem(i * 5 + offset * 7 + format, length(rs)))}
      end

    Enum.uniq(by_recipe ++ by_dtype)
  end

  defp cases(direction) do
    offset = %{py_to_ex: 0, ex_to_py: 1}[direction]

    offset
    |> pairs()
    |> Enum.with_index()
    |> Enum.map(fn {{format, dtype, recipe}, i} ->
      layouts = if format == 2, do: @v2_layouts, else: @v3_layouts
      n = length(layouts)

      layout =
        Enum.find_value(0..(n - 1), fn k ->
          l = Enum.at(layouts, rem(i + offset + k, n))
          if layout_applies?(l, dtype, recipe), do: l
        end)

      store = Enum.at(@stores, rem(div(i, 2) + offset, 2))
      build_case(direction, i, format, dtype, recipe, layout, store)
    end)
  end

  defp layout_applies?(:big_endian, dtype, recipe),
    do: recipe.serializer == nil and multibyte?(dtype)

  # zarr-python 3.1.6 cannot shard a structured dtype at all (its sharding
  # codec hashes the fill value, a numpy void scalar: "unhashable type").
  defp layout_applies?(:sharded, dtype, _recipe), do: not is_list(dtype)
  defp layout_applies?(:transposed, dtype, _recipe), do: dtype not in @variable
  defp layout_applies?(:f, dtype, _recipe), do: dtype not in @variable
  defp layout_applies?(_layout, _dtype, _recipe), do: true

  defp multibyte?(dtype) when is_list(dtype) or dtype in @variable, do: false
  defp multibyte?({:fixed_bytes, _}), do: false
  defp multibyte?(dtype), do: Dtype.itemsize(dtype) > 1

  defp build_case(direction, i, format, dtype, recipe, layout, store) do
    {shape, chunks, shards, writes} = geometry(layout, i)
    prefix = Enum.at(["", "g1/", "g1/g2/"], rem(i, 3))
    wire = wire_dtype(dtype)
    name = "#{direction}-#{i}-v#{format}-#{slug(wire)}-#{recipe.name}-#{layout}"

    fill =
      cond do
        rem(i, 4) != 3 -> nil
        dtype in [:float32, :float64] -> :nan
        dtype in @ints -> 7
        true -> nil
      end

    c = %{
      name: name,
      direction: direction,
      index: i,
      format: format,
      dtype: dtype,
      wire: wire,
      recipe: recipe,
      layout: layout,
      store: store,
      node: prefix <> name,
      prefix: prefix,
      shape: shape,
      chunks: chunks,
      shards: shards,
      writes: writes,
      fill: fill,
      finite: recipe.lossy,
      dimension_names: if(layout == :named, do: dimension_names(tuple_size(shape))),
      cke: cke(format, layout),
      order: if(layout == :f, do: "F", else: "C")
    }

    c =
      Map.merge(c, %{
        v2_filters: v2_filters(c),
        v2_compressor: complete(recipe.compressor, dtype) || complete(recipe.serializer, dtype),
        v3_codecs: if(format == 3, do: v3_codecs(c))
      })

    Map.put(c, :ts, ts?(c))
  end

  # {shape, chunks, shards, writes}; each write is {start, stop, seed}.
  defp geometry(:sharded, i),
    do: {{8, 12}, {2, 3}, {4, 6}, [{{0, 0}, {2, 3}, 10 * i + 1}, {{5, 7}, {7, 10}, 10 * i + 2}]}

  defp geometry(:transposed, i), do: {{7, 5}, {3, 2}, nil, [{{0, 0}, {7, 5}, 10 * i}]}

  defp geometry(_layout, i) do
    {shape, chunks} =
      Enum.at([{{37}, {10}}, {{13, 7}, {5, 3}}, {{5, 6, 7}, {2, 4, 3}}], rem(i, 3))

    {shape, chunks, nil, [{Tuple.duplicate(0, tuple_size(shape)), shape, 10 * i}]}
  end

  defp dimension_names(1), do: ["x"]
  defp dimension_names(2), do: ["y", nil]
  defp dimension_names(3), do: ["t", "y", "x"]

  defp cke(2, :slash), do: {:v2, "/"}
  defp cke(2, _), do: {:v2, "."}
  defp cke(3, :cke_v2), do: {:v2, "."}
  defp cke(3, :cke_dot), do: {:default, "."}
  defp cke(3, _), do: {:default, "/"}

  defp wire_dtype(dtype) do
    {:ok, wire} = Dtype.to_wire(dtype)
    wire
  end

  defp slug(wire) when is_list(wire), do: "struct"
  defp slug(wire), do: String.replace(wire, ~r/[^A-Za-z0-9]+/, "_")

  # A numcodecs config with what the dtype implies (as ZarrBridge.create does).
  defp complete(nil, _dtype), do: nil

  defp complete(%{"id" => "shuffle"} = c, dtype),
    do: Map.put_new(c, "elementsize", Dtype.itemsize(dtype))

  defp complete(%{"id" => id} = c, dtype) when id in ["delta", "quantize", "fixedscaleoffset"],
    do: Map.put_new(c, "dtype", wire_dtype(dtype))

  defp complete(c, _dtype), do: c

  defp vlen_id(:string), do: "vlen-utf8"
  defp vlen_id(:bytes), do: "vlen-bytes"

  defp v2_filters(%{dtype: dtype, recipe: r}) do
    filters = Enum.map(r.filters, &complete(&1, dtype))
    if dtype in @variable, do: [%{"id" => vlen_id(dtype)} | filters], else: filters
  end

  @array_to_array ~w(delta fixedscaleoffset quantize bitround astype packbits)

  # The full v3 codec list of a case, as zarr-python writes it.
  defp v3_codecs(%{dtype: dtype, recipe: r, layout: layout} = c) do
    filters = Enum.map(r.filters, &complete(&1, dtype))
    {aa, bb} = Enum.split_with(filters, &(&1["id"] in @array_to_array))

    serializer =
      cond do
        r.serializer -> numcodecs_v3(r.serializer)
        dtype in @variable -> %{"name" => vlen_id(dtype), "configuration" => %{}}
        layout == :big_endian -> bytes_codec(dtype, "big")
        true -> bytes_codec(dtype, "little")
      end

    transpose =
      if layout == :transposed,
        do: [%{"name" => "transpose", "configuration" => %{"order" => [1, 0]}}],
        else: []

    compressor = if r.compressor, do: [v3_codec(complete(r.compressor, dtype), c)], else: []
    crc = if layout == :crc32c, do: [%{"name" => "crc32c"}], else: []

    transpose ++
      Enum.map(aa, &numcodecs_v3/1) ++
      [serializer] ++ Enum.map(bb, &v3_codec(&1, c)) ++ compressor ++ crc
  end

  defp bytes_codec(dtype, endian) do
    if multibyte?(dtype),
      do: %{"name" => "bytes", "configuration" => %{"endian" => endian}},
      else: %{"name" => "bytes"}
  end

  defp v3_codec(%{"id" => "gzip"} = cfg, _c),
    do: %{"name" => "gzip", "configuration" => %{"level" => cfg["level"]}}

  defp v3_codec(%{"id" => "zstd"} = cfg, _c),
    do: %{"name" => "zstd", "configuration" => %{"level" => cfg["level"], "checksum" => false}}

  defp v3_codec(%{"id" => "blosc"} = cfg, %{dtype: dtype}) do
    typesize = if dtype in @variable, do: 1, else: Dtype.itemsize(dtype)
    shuffle = Enum.at(["noshuffle", "shuffle", "bitshuffle"], cfg["shuffle"])

    %{
      "name" => "blosc",
      "configuration" => %{
        "cname" => cfg["cname"],
        "clevel" => cfg["clevel"],
        "shuffle" => shuffle,
        "typesize" => typesize,
        "blocksize" => 0
      }
    }
  end

  defp v3_codec(cfg, _c), do: numcodecs_v3(cfg)

  defp numcodecs_v3(%{"id" => id} = cfg),
    do: %{"name" => "numcodecs." <> id, "configuration" => Map.delete(cfg, "id")}

  # Whether tensorstore has the dtype and every codec of the case.
  defp ts?(%{dtype: dtype, format: 2} = c),
    do: dtype in @numeric and c.v2_filters == [] and (c.v2_compressor || %{})["id"] in @ts_v2

  defp ts?(%{dtype: dtype, format: 3} = c),
    do: dtype in @numeric and Enum.all?(c.v3_codecs, &(&1["name"] in @ts_v3))

  # Where each direction's containers live: {format, store} -> root group.
  defp containers(dir, direction) do
    for format <- [2, 3], store <- @stores, into: %{} do
      path =
        case store do
          :filesystem -> Path.join(dir, "#{direction}-v#{format}")
          :zip -> Path.join(dir, "#{direction}-v#{format}.zip")
        end

      {{format, store},
       %{
         path: path,
         format: format,
         store: store,
         consolidated: {format, store} in [{2, :filesystem}, {3, :zip}]
       }}
    end
  end

  # ------------------------------------------------------------------
  # coverage

  test "the sampled matrix covers every dtype, codec, layout and store in both directions" do
    for direction <- [:py_to_ex, :ex_to_py] do
      cases = cases(direction)
      label = "#{direction}"

      for format <- [2, 3] do
        in_format = Enum.filter(cases, &(&1.format == format))
        assert Enum.sort(Enum.uniq(Enum.map(in_format, & &1.dtype))) == Enum.sort(@dtypes), label

        ids = in_format |> Enum.flat_map(& &1.recipe.ids) |> Enum.uniq() |> Enum.sort()
        expected = if format == 2, do: @array_codec_ids, else: @array_codec_ids -- ["base64"]
        assert ids == Enum.sort(expected), "#{label} v#{format}"

        layouts = if format == 2, do: @v2_layouts, else: @v3_layouts
        assert Enum.sort(Enum.uniq(Enum.map(in_format, & &1.layout))) == Enum.sort(layouts)
        assert Enum.sort(Enum.uniq(Enum.map(in_format, & &1.store))) == Enum.sort(@stores)
        assert Enum.uniq(Enum.map(in_format, & &1.prefix)) |> length() == 3
      end

      # base64 exists in v2 only (zarr-python has no v3 codec for it)
      assert Enum.any?(cases, &("base64" in &1.recipe.ids))
      # every dtype and every v3 layout meets both stores
      for store <- @stores do
        in_store = Enum.filter(cases, &(&1.store == store))
        assert length(Enum.uniq(Enum.map(in_store, & &1.dtype))) >= 15, "#{label} #{store}"
      end

      assert Enum.count(cases, & &1.ts) >= 10, label
      assert Enum.any?(cases, &(&1.fill == :nan)) and Enum.any?(cases, &(&1.fill == 7))
      assert Enum.uniq(Enum.map(cases, & &1.name)) |> length() == length(cases)
    end

    # The two directions are sampled differently.
    assert Enum.map(cases(:py_to_ex), &{&1.format, &1.dtype, &1.recipe.name, &1.layout}) !=
             Enum.map(cases(:ex_to_py), &{&1.format, &1.dtype, &1.recipe.name, &1.layout})

    assert Enum.sort(@memory_dtypes) == Enum.sort(@dtypes)

    # the codec lists cover numcodecs' whole registry (checked in the
    # zarr-python-writes test against the registry itself)
    assert length(@array_codec_ids ++ @object_codec_ids) == 29
  end

  # ------------------------------------------------------------------
  # zarr-python writes, Elixir reads

  @python_writer """
  root, cases, containers = sys.argv[1], eval(sys.argv[2]), eval(sys.argv[3])
  print('registry', ' '.join(sorted(numcodecs.registry.codec_registry)))

  LETTERS = list('abcxyz')
  CHARS = ['a', 'é', '日', '😀', 'z', ' ']

  def gen(w, shape, seed, finite):
      rng = np.random.default_rng(seed)
      n = int(np.prod(shape))
      if w == 'string':
          return np.array([''.join(rng.choice(CHARS, rng.integers(0, 6))) for _ in range(n)],
                          dtype=object).reshape(shape)
      if w == 'bytes':
          a = np.empty(n, dtype=object)
          for i, k in enumerate(rng.integers(0, 6, n)):
              a[i] = rng.bytes(int(k))
          return a.reshape(shape)
      return fill(np_dtype(w), n, rng, finite).reshape(shape)

  def fill(dt, n, rng, finite):
      if dt.fields is not None:
          a = np.zeros(n, dt)
          for name in dt.names:
              a[name] = fill(dt.fields[name][0], n, rng, finite)
          return a
      k = dt.kind
      if k == 'b':
          return rng.integers(0, 2, n).astype(bool)
      if k in 'iu':
          info = np.iinfo(dt)
          a = rng.integers(info.min, info.max, n, dtype=dt, endpoint=True)
          a[:2] = [info.min, info.max][:n]
          return a
      if k == 'f':
          a = (rng.standard_normal(n) * 1000).astype(dt)
          if not finite:
              a[:4] = [np.nan, np.inf, -np.inf, -0.0][:n]
          return a
      if k == 'c':
          a = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(dt)
          if not finite:
              a[:3] = [complex(np.nan, 0), complex(1, np.inf), complex(-0.0, -np.inf)][:n]
          return a
      if k in 'mM':
          v = rng.integers(-10**15, 10**15, n)
          v[0] = np.iinfo('i8').min
          return v.astype('i8').view(dt)
      if k == 'S':
          return np.array([''.join(rng.choice(LETTERS, rng.integers(0, dt.itemsize + 1))).encode()
                           for _ in range(n)], dtype=dt)
      if k == 'U':
          size = dt.itemsize // 4
          return np.array([''.join(rng.choice(CHARS, rng.integers(0, size + 1))) for _ in range(n)], dtype=dt)
      raise ValueError(dt)

  ARRAY_TO_BYTES = {'bytes', 'vlen-utf8', 'vlen-bytes', 'numcodecs.pcodec', 'numcodecs.zfpy'}

  def make(st, c):
      fmt = c['format']
      kw = dict(store=st, name=c['node'], shape=tuple(c['shape']), chunks=tuple(c['chunks']),
                dtype=zdtype(c['wire']), zarr_format=fmt, attributes={'case': c['name']})
      if c['fill'] is not None:
          kw['fill_value'] = c['fill']
      if fmt == 2:
          kw['filters'] = [numcodecs.get_codec(dict(f)) for f in c['v2_filters']] or None
          comp = c['v2_compressor']
          kw['compressors'] = numcodecs.get_codec(dict(comp)) if comp else None
          kw['order'] = c['order']
          kw['chunk_key_encoding'] = {'name': 'v2', 'separator': c['cke'][1]}
      else:
          codecs = c['v3_codecs']
          i = next(k for k, x in enumerate(codecs) if x['name'] in ARRAY_TO_BYTES)
          kw['filters'] = codecs[:i]
          kw['serializer'] = codecs[i]
          kw['compressors'] = codecs[i + 1:]
          if c['shards'] is not None:
              kw['shards'] = tuple(c['shards'])
          if c['dimension_names'] is not None:
              kw['dimension_names'] = c['dimension_names']
          kw['chunk_key_encoding'] = {'name': c['cke'][0], 'separator': c['cke'][1]}
      return zarr.create_array(**kw)

  stores = {}
  for key, cont in containers.items():
      st = open_store(cont['store'], cont['path'], 'w')
      zarr.open_group(st, mode='w', zarr_format=cont['format'], attributes={'container': cont['path']})
      stores[key] = st

  for c in cases:
      z = make(stores[(c['format'], c['store'])], c)
      for start, stop, seed in c['writes']:
          shape = tuple(b - a for a, b in zip(start, stop))
          z[tuple(slice(a, b) for a, b in zip(start, stop))] = gen(c['wire'], shape, seed, c['finite'])
      with open(f"{root}/{c['name']}.dump", 'wb') as f:
          f.write(dump(z[...]))

  for key, cont in containers.items():
      if cont['consolidated']:
          zarr.consolidate_metadata(stores[key])
      if cont['store'] == 'zip':
          stores[key].close()
  print('ok')
  """

  test "zarr-python writes, Elixir reads: metadata, data, stepped reads and raw chunks" do
    dir = tmp_dir("matrix")
    cases = cases(:py_to_ex)
    containers = containers(dir, :py_to_ex)

    out =
      Python.run!(Python.prelude() <> @python_writer, [
        dir,
        Python.literal(Enum.map(cases, &python_case/1)),
        Python.literal(Map.new(containers, fn {k, v} -> {k, python_container(v)} end))
      ])

    ["registry " <> registry, "ok"] = String.split(out, "\n", trim: true)

    assert Enum.sort(String.split(registry)) == Enum.sort(@array_codec_ids ++ @object_codec_ids),
           "numcodecs' registry changed: update the matrix"

    roots =
      Map.new(containers, fn {key, cont} ->
        {:ok, group} = Group.open(storage: cont.store, path: cont.path, mode: :r)
        assert group.consolidated == cont.consolidated, inspect(key)
        assert group.zarr_format == cont.format
        assert group.attributes == %{"container" => cont.path}
        {key, group}
      end)

    each_case(cases, fn c ->
      cont = containers[{c.format, c.store}]
      expected = File.read!(Path.join(dir, c.name <> ".dump"))

      # alternate: by node path, or through the group
      array =
        if rem(c.index, 2) == 0,
          do: ZarrBridge.open(storage: c.store, path: cont.path, node: c.node, mode: :r),
          else: Group.open_array(roots[{c.format, c.store}], c.node)

      array = ok!(array, "open")
      check_metadata!(array, c)

      nd = ok!(Array.read(array), "read")
      assert nd.shape == c.shape and nd.dtype == c.dtype
      assert Python.dump(nd) == expected, "data differs"

      step = Tuple.duplicate(2, tuple_size(c.shape)) |> put_elem(0, 3)
      stepped = ok!(Array.read(array, step: step), "stepped read")
      assert stepped == select(nd, step), "stepped read differs"

      check_raw_chunks!(array, c, cont)
    end)
  end

  defp check_metadata!(array, c) do
    meta = array.metadata
    assert {meta.zarr_format, meta.shape, meta.dtype} == {c.format, c.shape, c.dtype}, c.name
    assert meta.chunks == c.chunks, c.name
    assert meta.shards == c.shards, c.name
    assert meta.dimension_names == c.dimension_names, c.name
    assert meta.chunk_key_encoding == c.cke, c.name
    assert meta.attributes == %{"case" => c.name}, c.name
    if c.format == 2, do: assert(meta.order == c.order, c.name)

    case c.recipe.compressor do
      %{"id" => id} when id in ["zlib", "gzip", "bz2", "lzma", "lz4", "zstd", "blosc"] ->
        assert meta.compressor == String.to_atom(id), c.name

      _ ->
        :ok
    end

    case c.fill do
      nil -> :ok
      fill -> assert meta.fill_value == fill, c.name
    end
  end

  # The stored keys, the raw bytes of one chunk (compared with the file for
  # filesystem stores), and the same chunk named by its coordinates.
  defp check_raw_chunks!(array, c, cont) do
    [key | _] = keys = ok!(Array.chunk_keys(array), "chunk_keys")
    assert keys == Enum.sort(keys)
    raw = ok!(Array.read_chunk_raw(array, key), "read_chunk_raw")

    if cont.store == :filesystem,
      do: assert(raw == File.read!(Path.join([cont.path, c.node, key])), "raw chunk differs")

    coords = coords_of(key, c.cke)
    assert ZarrBridge.Metadata.chunk_key(array.metadata, coords) == key
    assert ok!(Array.read_chunk_raw(array, coords), "read_chunk_raw by coords") == raw
  end

  defp coords_of(key, {:default, sep}) do
    ["c" | parts] = String.split(key, sep)
    parts |> Enum.map(&String.to_integer/1) |> List.to_tuple()
  end

  defp coords_of(key, {:v2, sep}),
    do: key |> String.split(sep) |> Enum.map(&String.to_integer/1) |> List.to_tuple()

  # ------------------------------------------------------------------
  # Elixir writes, zarr-python and tensorstore read

  @python_reader """
  cases, containers = eval(sys.argv[1]), eval(sys.argv[2])
  import tensorstore as ts

  def ts_sha(cont, node):
      if cont['store'] == 'zip':
          kv = {'driver': 'zip', 'base': {'driver': 'file', 'path': cont['path']}, 'path': node + '/'}
      else:
          kv = {'driver': 'file', 'path': os.path.join(cont['path'], node) + '/'}
      t = ts.open({'driver': 'zarr' if cont['format'] == 2 else 'zarr3', 'kvstore': kv},
                  read=True).result()
      return sha(dump(t.read().result()))

  def codec_names(z):
      md = z.metadata
      if md.zarr_format == 2:
          return [f.get_config()['id'] for f in (md.filters or ())] + \\
                 ([md.compressor.get_config()['id']] if md.compressor is not None else [])
      out = []
      def walk(codecs):
          for x in codecs:
              d = x.to_dict()
              out.append(d['name'].removeprefix('numcodecs.'))
              if d['name'] == 'sharding_indexed':
                  walk(x.codecs)
      walk(md.codecs)
      return out

  groups = {}
  for key, cont in containers.items():
      st = open_store(cont['store'], cont['path'], 'r')
      g = zarr.open_group(st, mode='r')
      groups[key] = g
      print('container', cont['path'], g.metadata.consolidated_metadata is not None,
            g.metadata.zarr_format, json.dumps(dict(g.attrs)))

  for c in cases:
      key = (c['format'], c['store'])
      z = groups[key][c['node']]
      assert z.metadata.zarr_format == c['format'], c['name']
      assert dict(z.attrs) == {'case': c['name']}, (c['name'], dict(z.attrs))
      assert tuple(z.shape) == tuple(c['shape']), c['name']
      if c['format'] == 3:
          assert tuple(z.chunks) == tuple(c['chunks']), c['name']
          assert (z.shards and tuple(z.shards)) == (c['shards'] and tuple(c['shards'])), c['name']
          assert z.metadata.dimension_names == (c['dimension_names'] and tuple(c['dimension_names'])), c['name']
          cke = z.metadata.chunk_key_encoding
          assert (cke.name, cke.separator) == tuple(c['cke']), (c['name'], cke)
      else:
          assert z.metadata.order == c['order'], c['name']
          assert z.metadata.dimension_separator == c['cke'][1], c['name']
      t = ts_sha(containers[key], c['node']) if c['ts'] else '-'
      print('case', c['name'], sha(dump(z[...])), t, ','.join(codec_names(z)))
  """

  test "Elixir writes, zarr-python and tensorstore read the same values" do
    dir = tmp_dir("matrix")
    cases = cases(:ex_to_py)
    containers = containers(dir, :ex_to_py)

    groups =
      for {key, cont} <- containers, into: %{} do
        {:ok, root} =
          Group.create(
            storage: cont.store,
            path: cont.path,
            zarr_version: cont.format,
            attributes: %{"container" => cont.path}
          )

        {:ok, g1} = Group.create_group(root, "g1")
        {:ok, g2} = Group.create_group(g1, "g2")
        {key, %{"" => root, "g1/" => g1, "g1/g2/" => g2}}
      end

    expected =
      cases
      |> each_case(fn c ->
        group = groups[{c.format, c.store}][c.prefix]
        array = ok!(Group.create_array(group, c.name, create_opts(c)), "create_array")
        {c.name, write_case!(array, c)}
      end)
      |> Map.new()

    for {key, cont} <- containers, cont.consolidated do
      {:ok, group} = ZarrBridge.consolidate_metadata(storage: cont.store, path: cont.path)
      assert group.consolidated, inspect(key)
    end

    out =
      Python.run!(Python.prelude() <> @python_reader, [
        Python.literal(Enum.map(cases, &python_case/1)),
        Python.literal(Map.new(containers, fn {k, v} -> {k, python_container(v)} end))
      ])

    lines = String.split(out, "\n", trim: true)

    for {_key, cont} <- containers do
      line = Enum.find(lines, &String.starts_with?(&1, "container #{cont.path} "))
      assert line, "no report for #{cont.path}"
      consolidated = if cont.consolidated, do: "True", else: "False"
      assert line =~ " #{consolidated} #{cont.format} ", line
    end

    reports =
      for "case " <> rest <- lines, into: %{} do
        [name, sha, ts, codecs] = String.split(rest, " ", parts: 4)
        {name, {sha, ts, String.split(codecs, ",", trim: true)}}
      end

    assert map_size(reports) == length(cases)

    each_case(cases, fn c ->
      {sha, ts, codecs} = Map.fetch!(reports, c.name)
      want = sha256(Map.fetch!(expected, c.name))
      assert sha == want, "zarr-python reads other values"
      if c.ts, do: assert(ts == want, "tensorstore reads other values")

      for id <- c.recipe.ids do
        assert id in codecs, "#{id} missing from #{inspect(codecs)}"
      end

      if c.layout == :transposed, do: assert("transpose" in codecs)
      if c.layout == :crc32c, do: assert("crc32c" in codecs)
      if c.layout == :sharded, do: assert("sharding_indexed" in codecs)
    end)
  end

  defp create_opts(c) do
    base = [
      shape: c.shape,
      chunks: c.chunks,
      dtype: c.dtype,
      zarr_version: c.format,
      attributes: %{"case" => c.name}
    ]

    base = if c.fill, do: base ++ [fill_value: c.fill], else: base
    base ++ codec_opts(c)
  end

  defp codec_opts(%{format: 2, recipe: r, dtype: dtype} = c) do
    compressor = r.compressor || r.serializer
    # variable-length dtypes get their vlen filter from the sidecar when no
    # filters are given; with filters it must lead them
    filters =
      cond do
        r.filters == [] -> []
        dtype in @variable -> [filters: [%{"id" => vlen_id(dtype)} | r.filters]]
        true -> [filters: r.filters]
      end

    [compressor: compressor, order: c.order, dimension_separator: elem(c.cke, 1)] ++ filters
  end

  defp codec_opts(%{format: 3, recipe: r, layout: layout} = c) do
    explicit? = layout in [:transposed, :big_endian, :crc32c] or r.serializer != nil

    codecs =
      if explicit?,
        do: [codecs: c.v3_codecs],
        else:
          [compressor: r.compressor] ++ if(r.filters == [], do: [], else: [filters: r.filters])

    codecs ++
      [chunk_key_encoding: c.cke] ++
      if(c.shards, do: [shards: c.shards], else: []) ++
      if(c.dimension_names, do: [dimension_names: c.dimension_names], else: [])
  end

  # Writes the case's boxes (NDArray, nested tuples and raw binaries in
  # turn), checks the read-back, and returns the dump zarr-python must match.
  defp write_case!(array, c) do
    for {{start, stop, seed}, k} <- Enum.with_index(c.writes) do
      shape = sub(stop, start)
      nd = gen(c.dtype, shape, seed, c.finite)
      data = nd.data

      result =
        case rem(c.index + k, 3) do
          0 -> Array.write(array, nd, start: start)
          1 -> Array.set_slice(array, NDArray.to_nested(nd), start: start)
          2 when is_binary(data) -> Array.write(array, data, start: start, stop: stop)
          2 -> Array.write(array, nd, start: start, stop: stop)
        end

      ok!(result, "write #{k}")

      if not c.recipe.lossy do
        assert ok!(Array.read(array, start: start, stop: stop), "read back #{k}") == nd,
               "read back #{k} differs"
      end
    end

    Python.dump(ok!(Array.read(array), "read back"))
  end

  # ------------------------------------------------------------------
  # memory stores: Elixir writes and reads back through the sidecar

  test "memory stores round-trip every dtype in both formats, inside groups" do
    store = "matrix-#{System.unique_integer([:positive])}"

    for format <- [2, 3] do
      {:ok, root} =
        Group.create(storage: :memory, path: store, node: "v#{format}", zarr_version: format)

      {:ok, sub} = Group.create_group(root, "sub", attributes: %{"k" => format})

      cases =
        for {dtype, i} <- Enum.with_index(@memory_dtypes) do
          recipe =
            Enum.find(recipes(), &(&1.name == Enum.at(@memory_recipes, rem(i + format, 7))))

          layout =
            if format == 3 and rem(i, 2) == 0 and not is_list(dtype), do: :sharded, else: :plain

          layout = if format == 2, do: Enum.at(@v2_layouts, rem(i, 3)), else: layout
          layout = if layout == :f and dtype in @variable, do: :c, else: layout
          build_case(:memory, i, format, dtype, recipe, layout, :memory)
        end

      each_case(cases, fn c ->
        group = if rem(c.index, 2) == 0, do: root, else: sub
        array = ok!(Group.create_array(group, c.name, create_opts(c)), "create_array")
        assert array.storage == :memory
        write_case!(array, c)

        # the data is there for a fresh open too, and a stepped read agrees
        again =
          ok!(ZarrBridge.open(storage: :memory, path: store, node: array.node, mode: :r), "open")

        full = ok!(Array.read(again), "read")
        step = Tuple.duplicate(2, tuple_size(c.shape))
        assert Array.read(again, step: step) == {:ok, select(full, step)}
        [key | _] = ok!(Array.chunk_keys(again), "chunk_keys")
        raw = ok!(Array.read_chunk_raw(again, key), "read_chunk_raw")
        assert is_binary(raw) and byte_size(raw) > 0
      end)

      {:ok, members} = Group.members(root)
      assert {"sub", :group} in members
      assert length(members) == 1 + div(length(@memory_dtypes) + 1, 2)

      assert {:ok, consolidated} =
               ZarrBridge.consolidate_metadata(storage: :memory, path: store, node: "v#{format}")

      assert consolidated.consolidated

      assert {:ok, %Group{consolidated: true}} =
               Group.open(storage: :memory, path: store, node: "v#{format}")

      assert {:ok, %Group{attributes: %{"k" => ^format}}} = Group.open_group(root, "sub")
    end
  end

  # ------------------------------------------------------------------
  # object codecs: both ways at the codec level

  @python_object_codecs """
  numcodecs.pickles.ALLOW_UNSAFE_PICKLE_DECODE = True
  items, out = eval(sys.argv[1]), sys.argv[2]
  for name, config, values, dtype, encoded in items:
      codec = numcodecs.get_codec(dict(config))
      decoded = codec.decode(encoded)
      if dtype is not None:
          got = np.asarray(decoded).astype(np_dtype(dtype)).tolist()
      elif name == 'vlen-array':
          got = [np.asarray(x).tolist() for x in decoded]
      else:
          got = list(decoded)
      assert got == values, (name, got, values)
      arr = np.array(values, dtype=np_dtype(dtype)) if dtype is not None else None
      if name == 'vlen-array':
          arr = np.empty(len(values), dtype=object)
          for i, v in enumerate(values):
              arr[i] = np.array(v, dtype=config['dtype'])
      elif arr is None:
          arr = np.empty(len(values), dtype=object)
          for i, v in enumerate(values):
              arr[i] = v
      with open(f'{out}/{name}.enc', 'wb') as f:
          f.write(codec.encode(arr))
      print('ok', name)
  """

  test "object codecs zarr-python cannot put in an array go both ways through ZarrBridge.Codecs" do
    dir = tmp_dir("matrix")
    pickle_sidecar = ZarrBridge.Test.SidecarCase.start_sidecar(allow_pickle: true)

    # {id, config, values, dtype (fixed-size) or nil, server}
    items = [
      {"json2", %{"id" => "json2"}, ["a", 1, nil, [1, 2.5], %{"k" => "v"}, true], nil},
      {"msgpack2", %{"id" => "msgpack2"}, ["a", 1, nil, [1, 2.5], %{"k" => "v"}, true], nil},
      {"pickle", %{"id" => "pickle"}, ["a", 1, nil, [1, 2.5], %{"k" => "v"}, true], nil},
      {"categorize",
       %{"id" => "categorize", "labels" => ["red", "blu"], "dtype" => "<U3", "astype" => "|u1"},
       ["red", "", "blu", "red"], "U3"},
      {"vlen-array", %{"id" => "vlen-array", "dtype" => "int32"}, [[1, 2], [], [3, -4, 5]], nil}
    ]

    assert Enum.sort(Enum.map(items, &elem(&1, 0))) == Enum.sort(@object_codec_ids)

    encoded =
      for {id, config, values, dtype} <- items do
        server = if id == "pickle", do: pickle_sidecar, else: ZarrBridge.Sidecar
        {:ok, bytes} = Codecs.encode(config, object_input(id, values, dtype), server: server)
        {id, config, values, dtype, {:bin_literal, bytes}}
      end

    out =
      Python.run!(Python.prelude() <> @python_object_codecs, [
        python_items(encoded),
        dir
      ])

    assert Enum.sort(String.split(out, "\n", trim: true)) ==
             Enum.sort(Enum.map(@object_codec_ids, &"ok #{&1}"))

    for {id, config, values, dtype} <- items do
      server = if id == "pickle", do: pickle_sidecar, else: ZarrBridge.Sidecar
      bytes = File.read!(Path.join(dir, id <> ".enc"))

      case dtype do
        nil ->
          {:ok, got} = Codecs.decode(config, bytes, server: server)
          assert got == object_expected(id, values), id

        "U3" ->
          {:ok, got} =
            Codecs.decode(config, bytes,
              dtype: {:fixed_unicode, 3},
              shape: {length(values)},
              server: server
            )

          assert NDArray.to_list(NDArray.new!(got, {length(values)}, {:fixed_unicode, 3})) ==
                   values
      end
    end

    # pickle stays refused by a sidecar that does not allow it
    assert {:error, %ZarrBridge.Error{code: :codec_forbidden}} =
             Codecs.decode(%{"id" => "pickle"}, File.read!(Path.join(dir, "pickle.enc")))
  end

  defp object_input("vlen-array", values, nil),
    do: {:values, Enum.map(values, &{:bin, for(x <- &1, into: <<>>, do: <<x::32-little>>)})}

  defp object_input(_id, values, nil), do: {:values, values}

  defp object_input(_id, values, "U3"),
    do: NDArray.from_list!(values, {length(values)}, {:fixed_unicode, 3}).data

  defp object_expected("vlen-array", values),
    do: Enum.map(values, &for(x <- &1, into: <<>>, do: <<x::32-little-signed>>))

  defp object_expected(_id, values), do: values

  # The items as a Python literal, with the encoded bytes as bytes literals.
  defp python_items(items) do
    "[" <>
      Enum.map_join(items, ", ", fn {id, config, values, dtype, {:bin_literal, bytes}} ->
        "(" <>
          Enum.map_join([id, config, values, dtype], ", ", &Python.literal/1) <>
          ", bytes.fromhex('#{Base.encode16(bytes)}'))"
      end) <> "]"
  end

  # ------------------------------------------------------------------
  # helpers

  defp python_case(c) do
    %{
      "name" => c.name,
      "format" => c.format,
      "store" => c.store,
      "wire" => c.wire,
      "node" => c.node,
      "shape" => c.shape,
      "chunks" => c.chunks,
      "shards" => c.shards,
      "writes" => Enum.map(c.writes, fn {a, b, s} -> [a, b, s] end),
      "fill" => c.fill,
      "finite" => c.finite,
      "dimension_names" => c.dimension_names,
      "cke" => Tuple.to_list(c.cke),
      "order" => c.order,
      "v2_filters" => c.v2_filters,
      "v2_compressor" => c.v2_compressor,
      "v3_codecs" => c.v3_codecs,
      "ts" => c.ts
    }
  end

  defp python_container(cont) do
    %{
      "path" => cont.path,
      "format" => cont.format,
      "store" => cont.store,
      "consolidated" => cont.consolidated
    }
  end

  # Runs `fun` on every case, collecting every failure (labelled with the
  # case's name) and failing once at the end with all of them; returns the
  # results of the cases that passed.
  defp each_case(cases, fun) do
    {results, failures} =
      Enum.reduce(cases, {[], []}, fn c, {results, failures} ->
        try do
          {[fun.(c) | results], failures}
        rescue
          e in [ExUnit.AssertionError] ->
            left =
              if e.left == :ex_unit_no_meaningful_value, do: "", else: inspect(e.left, limit: 8)

            {results, ["#{c.name}: #{e.message} #{left}" | failures]}

          e ->
            {results, ["#{c.name}: #{Exception.message(e)}" | failures]}
        end
      end)

    if failures != [] do
      flunk(
        "#{length(failures)} of #{length(cases)} cases failed:\n" <>
          Enum.join(Enum.reverse(failures), "\n")
      )
    end

    Enum.reverse(results)
  end

  defp ok!(:ok, _what), do: :ok
  defp ok!({:ok, value}, _what), do: value

  defp ok!({:error, %ZarrBridge.Error{} = e}, what),
    do: flunk("#{what}: #{e.code}: #{String.slice(e.message, 0, 300)}")

  defp ok!(other, what), do: flunk("#{what}: #{inspect(other, limit: 8)}")

  defp sha256(bytes), do: :crypto.hash(:sha256, bytes) |> Base.encode16(case: :lower)

  defp sub(a, b),
    do: Enum.zip_with(Tuple.to_list(a), Tuple.to_list(b), &(&1 - &2)) |> List.to_tuple()

  # Every `step`-th element along each dimension, picked from the raw data.
  defp select(%NDArray{shape: shape, dtype: dtype} = nd, step) do
    dims = Tuple.to_list(shape)
    steps = Tuple.to_list(step)
    out_shape = Enum.zip_with(dims, steps, fn d, s -> div(d + s - 1, s) end)
    strides = dims |> Enum.reverse() |> Enum.scan(1, &(&1 * &2)) |> Enum.reverse() |> tl()
    strides = strides ++ [1]

    flat =
      Enum.zip([dims, steps, strides])
      |> Enum.reduce([0], fn {d, s, stride}, acc ->
        for base <- acc, i <- 0..(d - 1)//s, do: base + i * stride
      end)

    data =
      case nd.data do
        list when is_list(list) ->
          tuple = List.to_tuple(list)
          Enum.map(flat, &elem(tuple, &1))

        bin ->
          size = Dtype.itemsize(dtype)
          IO.iodata_to_binary(Enum.map(flat, &binary_part(bin, &1 * size, size)))
      end

    NDArray.new!(data, List.to_tuple(out_shape), dtype)
  end

  # ------------------------------------------------------------------
  # Elixir-side data

  @chars ["a", "é", "日", "😀", "z", " "]

  defp gen(dtype, shape, seed, finite) do
    :rand.seed(:exsss, {seed, 5, 77})
    n = NDArray.size(shape)
    NDArray.from_list!(Enum.map(0..(n - 1)//1, &element(dtype, &1, finite)), shape, dtype)
  end

  defp element(:bool, _i, _f), do: :rand.uniform(2) == 1

  defp element(dtype, i, _f) when dtype in @ints do
    bits = Dtype.itemsize(dtype) * 8
    signed = dtype in [:int8, :int16, :int32, :int64]
    min = if signed, do: -Bitwise.bsl(1, bits - 1), else: 0
    max = if signed, do: Bitwise.bsl(1, bits - 1) - 1, else: Bitwise.bsl(1, bits) - 1

    case i do
      0 -> min
      1 -> max
      _ -> min + :rand.uniform(max - min + 1) - 1
    end
  end

  defp element(dtype, i, finite) when dtype in @floats do
    if not finite and i < 4,
      do: Enum.at([:nan, :infinity, :neg_infinity, -0.0], i),
      else: :rand.normal() * 1000
  end

  defp element(dtype, i, finite) when dtype in [:complex64, :complex128] do
    if not finite and i < 3,
      do: Enum.at([{:nan, 0.0}, {1.0, :infinity}, {-0.0, :neg_infinity}], i),
      else: {:rand.normal(), :rand.normal()}
  end

  defp element({kind, _unit}, i, _f) when kind in [:datetime64, :timedelta64] do
    if i == 0,
      do: -9_223_372_036_854_775_808,
      else: :rand.uniform(2_000_000_000_000_000) - 1_000_000_000_000_000
  end

  defp element({:fixed_bytes, n}, _i, _f),
    do: for(_ <- 1..(:rand.uniform(n + 1) - 1)//1, into: "", do: <<Enum.random(?a..?z)>>)

  defp element({:fixed_unicode, n}, _i, _f),
    do: Enum.map_join(1..(:rand.uniform(n + 1) - 1)//1, fn _ -> Enum.random(@chars) end)

  defp element(:string, _i, _f),
    do: Enum.map_join(1..(:rand.uniform(6) - 1)//1, fn _ -> Enum.random(@chars) end)

  defp element(:bytes, _i, _f), do: :rand.bytes(:rand.uniform(6) - 1)

  defp element([_ | _] = fields, i, f),
    do: Map.new(fields, fn {name, type} -> {name, element(type, i, f)} end)
end
