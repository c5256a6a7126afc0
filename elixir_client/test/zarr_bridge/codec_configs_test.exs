defmodule ZarrBridge.CodecConfigsTest do
  # Codec configs numcodecs accepts (zlib/gzip level -1, lz4 acceleration 0
  # and -1, zstd past level 22, shuffle elementsize 0) work from Elixir in
  # every place a codec goes, and agree with numcodecs and zarr-python run
  # in a separate Python process. Also: batches of any size.
  use ExUnit.Case, async: false

  import ZarrBridge.Test.TmpDir
  import ZarrBridge.Test.SidecarCase

  alias ZarrBridge.{Array, Codecs, Error, NDArray}
  alias ZarrBridge.Test.Python

  @moduletag timeout: 600_000

  @compressors [
    {:zlib, level: -1},
    {:gzip, level: -1},
    {:lz4, acceleration: 0},
    {:lz4, acceleration: -1},
    {:zstd, level: 23},
    {:zstd, level: 100}
  ]
  @filters [{:shuffle, elementsize: 0}]

  defp data(n \\ 5000), do: NDArray.from_list!(for(i <- 1..n, do: i * 0.25 - 7), {n}, :float64)

  defp py_config({id, opts}),
    do:
      Python.literal(
        Map.new([
          {"id", Atom.to_string(id)} | Enum.map(opts, fn {k, v} -> {Atom.to_string(k), v} end)
        ])
      )

  # numcodecs' encoding of `raw` (float64) with each codec, from Python.
  defp numcodecs_encoded(dir, raw, codecs) do
    File.write!(Path.join(dir, "raw"), raw)

    script = """
    import sys, numpy as np, numcodecs
    d = sys.argv[1]
    arr = np.frombuffer(open(f'{d}/raw', 'rb').read(), dtype='<f8')
    for i, cfg in enumerate([#{Enum.map_join(codecs, ", ", &py_config/1)}]):
        open(f'{d}/enc{i}', 'wb').write(bytes(numcodecs.get_codec(cfg).encode(arr)))
    print('ok')
    """

    assert Python.run!(script, [dir]) == "ok\n"
    for i <- 0..(length(codecs) - 1), do: File.read!(Path.join(dir, "enc#{i}"))
  end

  # gzip streams carry the time they were written (bytes 4..7).
  defp no_mtime(<<31, 139, 8, flags, _mtime::binary-size(4), rest::binary>>),
    do: <<31, 139, 8, flags, 0::32, rest::binary>>

  defp no_mtime(other), do: other

  test "Codecs.encode/decode take the configs and agree with numcodecs" do
    dir = tmp_dir("cfg")
    nd = data()
    codecs = @compressors ++ @filters
    expected = numcodecs_encoded(dir, nd.data, codecs)

    for {codec, want} <- Enum.zip(codecs, expected) do
      assert {:ok, got} = Codecs.encode(codec, nd.data, dtype: :float64), inspect(codec)
      assert no_mtime(got) == no_mtime(want), inspect(codec)
      assert {:ok, out} = Codecs.decode(codec, want, dtype: :float64, shape: {5000})
      assert out == nd.data, inspect(codec)
    end
  end

  test "a v2 pipeline takes them as compressor and filter" do
    nd = data()

    for compressor <- @compressors do
      spec = [
        zarr_format: 2,
        dtype: :float64,
        shape: {5000},
        compressor: compressor,
        filters: @filters
      ]

      assert {:ok, chunk} = Codecs.pipeline_encode(spec, nd.data), inspect(compressor)
      assert {:ok, plain} = Codecs.encode(compressor, nd.data)
      assert no_mtime(chunk) == no_mtime(plain)
      assert {:ok, out} = Codecs.pipeline_decode(spec, chunk)
      assert out == nd.data
    end
  end

  test "ZarrBridge.create + write + read, and zarr-python reads the result" do
    dir = tmp_dir("cfg")
    nd = data(3000)

    names =
      for {compressor, i} <- Enum.with_index(@compressors), format <- [2, 3] do
        name = "a#{i}v#{format}"

        assert {:ok, array} =
                 ZarrBridge.create(
                   path: Path.join(dir, name),
                   shape: {3000},
                   chunks: {700},
                   dtype: :float64,
                   compressor: compressor,
                   filters: @filters,
                   zarr_version: format
                 ),
               inspect({compressor, format})

        assert :ok = Array.write(array, nd)
        assert {:ok, back} = Array.read(array)
        assert back.data == nd.data
        name
      end

    File.write!(Path.join(dir, "raw"), nd.data)

    script = """
    import sys, numpy as np, zarr
    d = sys.argv[1]
    want = np.frombuffer(open(f'{d}/raw', 'rb').read(), dtype='<f8')
    for name in sys.argv[2:]:
        got = zarr.open_array(f'{d}/{name}', mode='r')[...]
        assert (got == want).all(), name
    print('ok')
    """

    assert Python.run!(script, [dir | names]) == "ok\n"
  end

  test "arrays zarr-python wrote with these settings read from Elixir" do
    dir = tmp_dir("cfg")

    script = """
    import sys, numpy as np, zarr, numcodecs
    d = sys.argv[1]
    data = np.arange(3000, dtype='<f8') * 0.25 - 7
    open(f'{d}/raw', 'wb').write(data.tobytes())
    comps = [numcodecs.Zlib(level=-1), numcodecs.GZip(level=-1), numcodecs.LZ4(acceleration=0),
             numcodecs.LZ4(acceleration=-1), numcodecs.Zstd(level=23)]
    for i, c in enumerate(comps):
        z = zarr.create_array(f'{d}/v2_{i}', shape=(3000,), chunks=(700,), dtype='<f8',
                              zarr_format=2, compressors=c,
                              filters=[numcodecs.Shuffle(elementsize=0)])
        z[...] = data
    import zarr.codecs.numcodecs as zn
    v3 = [zn.Zlib(level=-1), zn.GZip(level=-1), zn.LZ4(acceleration=0), zn.LZ4(acceleration=-1),
          zn.Zstd(level=23)]
    for i, c in enumerate(v3):
        z = zarr.create_array(f'{d}/v3_{i}', shape=(3000,), chunks=(700,), dtype='<f8',
                              zarr_format=3, compressors=[c])
        z[...] = data
    print('ok')
    """

    assert Python.run!(script, [dir]) == "ok\n"
    raw = File.read!(Path.join(dir, "raw"))

    for prefix <- ["v2_", "v3_"], i <- 0..4 do
      assert {:ok, array} = ZarrBridge.open(path: Path.join(dir, "#{prefix}#{i}")),
             "#{prefix}#{i}"

      assert {:ok, nd} = Array.read(array)
      assert nd.data == raw, "#{prefix}#{i}"
    end
  end

  test "a value numcodecs refuses is invalid_codec_config with numcodecs' message" do
    assert {:error, %Error{code: :invalid_codec_config, message: message}} =
             Codecs.encode({:zlib, level: 10}, data().data)

    assert message =~ "Bad compression level"

    assert {:error, %Error{code: :invalid_codec_config}} =
             Codecs.encode({:zlib, level: "9"}, data().data)

    # at create too, rather than an array no write could ever fill
    dir = tmp_dir("cfg")

    for {compressor, format} <- [{{:zlib, level: 42}, 2}, {{:blosc, clevel: 10}, 3}] do
      assert {:error, %Error{code: :invalid_codec_config, message: message}} =
               ZarrBridge.create(
                 path: Path.join(dir, "bad#{format}"),
                 shape: {10},
                 dtype: :float64,
                 compressor: compressor,
                 zarr_version: format
               )

      assert message =~ "rejected its config", message
      refute File.exists?(Path.join(dir, "bad#{format}"))
    end
  end

  # ------------------------------------------------------------------
  # Batches of any size

  @item_bytes 2 * 1024 * 1024
  @items 50

  # 50 compressible 2 MiB items, and numcodecs' zstd encoding of each.
  defp big_batch(dir) do
    script = """
    import sys, numpy as np, numcodecs
    d = sys.argv[1]
    rng = np.random.default_rng(3)
    codec = numcodecs.Zstd(level=1)
    with open(f'{d}/raw', 'wb') as raw, open(f'{d}/enc', 'wb') as enc:
        sizes = []
        for i in range(#{@items}):
            item = rng.integers(0, 40, size=#{@item_bytes}, dtype=np.uint8).tobytes()
            e = bytes(codec.encode(item))
            raw.write(item); enc.write(e); sizes.append(len(e))
    print(' '.join(map(str, sizes)))
    """

    sizes = Python.run!(script, [dir]) |> String.split() |> Enum.map(&String.to_integer/1)
    raw = File.read!(Path.join(dir, "raw"))
    enc = File.read!(Path.join(dir, "enc"))
    raws = for i <- 0..(@items - 1), do: binary_part(raw, i * @item_bytes, @item_bytes)

    {encs, _} =
      Enum.map_reduce(sizes, 0, fn n, offset -> {binary_part(enc, offset, n), offset + n} end)

    {raws, encs}
  end

  test "decode_many and encode_many take a 100 MiB batch, with and without the handoff" do
    dir = tmp_dir("cfg")
    {raws, encs} = big_batch(dir)
    assert Enum.sum(Enum.map(raws, &byte_size/1)) == 100 * 1024 * 1024

    for handoff <- [true, false] do
      assert {:ok, decoded} = Codecs.decode_many(:zstd, encs, handoff: handoff, timeout: 300_000)
      assert length(decoded) == @items
      assert Enum.all?(Enum.zip(decoded, raws), fn {a, b} -> a == b end), "handoff #{handoff}"

      assert {:ok, encoded} =
               Codecs.encode_many({:zstd, level: 1}, raws, handoff: handoff, timeout: 300_000)

      assert Enum.all?(Enum.zip(encoded, encs), fn {a, b} -> a == b end), "handoff #{handoff}"
    end
  end

  test "a batch over max_request_bytes names that limit, and the sidecar keeps serving" do
    server = start_sidecar(max_request_bytes: 8 * 1024 * 1024)
    items = for _ <- 1..5, do: :binary.copy(<<7>>, 2 * 1024 * 1024)

    for handoff <- [true, false] do
      assert {:error, %Error{code: :too_large, message: message}} =
               Codecs.encode_many(:zlib, items, server: server, handoff: handoff)

      assert message =~ "max_request_bytes"
      assert message =~ "split it"
      refute message =~ ":upload"

      assert {:error, %Error{code: :too_large}} =
               Codecs.decode_many(:zlib, items, server: server, handoff: handoff)
    end

    small = Enum.take(items, 3)
    assert {:ok, encoded} = Codecs.encode_many(:zlib, small, server: server)
    assert {:ok, ^small} = Codecs.decode_many(:zlib, encoded, server: server)
  end

  test "a small batch to a sidecar with a small frame limit goes as an upload" do
    server = start_sidecar(args: ["--max-frame-bytes", "65536", "--stream-frame-bytes", "16384"])
    items = for i <- 1..10, do: :binary.copy(<<i>>, 20_000)

    assert {:ok, encoded} = Codecs.encode_many({:zlib, level: -1}, items, server: server)
    assert {:ok, ^items} = Codecs.decode_many({:zlib, level: -1}, encoded, server: server)

    assert {:ok, ^items} =
             Codecs.decode_many({:zlib, level: -1}, encoded, server: server, handoff: false)
  end

  # categorize with an object dtype maps values to small integers and back
  # to its str labels: nothing is unpickled, so no opt-in is needed.
  for allow <- [false, true] do
    test "categorize with an object dtype, allow_pickle: #{allow}" do
      server = start_sidecar(allow_pickle: unquote(allow))
      codec = {:categorize, labels: ["male", "female"], dtype: "|O", astype: "|u1"}
      values = ["male", "female", "female", "male", "unexpected"]

      assert {:ok, <<1, 2, 2, 1, 0>> = packed} =
               Codecs.encode(codec, {:values, values}, server: server)

      assert {:ok, ["male", "female", "female", "male", ""]} =
               Codecs.decode(codec, packed, server: server)
    end
  end
end
