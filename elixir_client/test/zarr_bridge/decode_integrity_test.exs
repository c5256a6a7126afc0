defmodule ZarrBridge.DecodeIntegrityTest do
  # A chunk that decodes to fewer bytes than a chunk holds must never read as
  # {:ok, ...}: zarr-python writes the arrays, then one chunk file is
  # replaced by a short but valid zstd frame (numcodecs encodes it). Before
  # every bad request the same sidecar reads an array of distinctive values,
  # so the buffers its worker and handler threads reuse hold them. Not async:
  # the machine has two cores.
  use ZarrBridge.Test.SidecarCase, async: false

  alias ZarrBridge.{Array, NDArray}
  alias ZarrBridge.Test.Python

  @moduletag timeout: 120_000
  @n 4096
  @chunk 1024
  @distinct 0x5A5A0000

  setup do
    # one worker, a low handoff threshold and small stream frames: a 16 KiB
    # array then takes the handoff and the streamed paths too
    sidecar =
      start_sidecar(
        workers: 1,
        args: ["--handoff-threshold", "1024", "--stream-frame-bytes", "4096"]
      )

    dir = Path.join(System.tmp_dir!(), "zb-di-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf(dir) end)
    %{sidecar: sidecar, dir: dir}
  end

  # zarr-python writes both arrays; chunk 1 of "bad" becomes a zstd frame of
  # half a chunk. Prints what zarr-python makes of the bad chunk.
  defp make_arrays(dir) do
    Python.run!(
      """
      import sys, numcodecs, numpy as np, zarr
      base, n, chunk, distinct = sys.argv[1], *map(int, sys.argv[2:])
      for name, values in (("distinct", distinct + np.arange(n)),
                           ("bad", np.arange(n) * 3 - 1000)):
          z = zarr.create_array(f"{base}/{name}", shape=(n,), chunks=(chunk,),
                                dtype="<i4", fill_value=0, zarr_format=3,
                                compressors=zarr.codecs.ZstdCodec(level=1))
          z[:] = values.astype("<i4")
      short = np.arange(chunk // 2, dtype="<i4")
      with open(f"{base}/bad/c/1", "wb") as f:
          f.write(numcodecs.Zstd(level=1).encode(short))
      try:
          zarr.open_array(f"{base}/bad", mode="r")[:]
          print("zarr-python read it")
      except Exception as e:
          print("zarr-python refused:", type(e).__name__)
      """,
      [dir | Enum.map([@n, @chunk, @distinct], &Integer.to_string/1)]
    )
  end

  defp distinct_values(sidecar, dir) do
    array = ZarrBridge.open!(path: Path.join(dir, "distinct"), server: sidecar)
    expected = for i <- 0..(@n - 1), into: <<>>, do: <<@distinct + i::signed-little-32>>

    for opts <- [[handoff: true], [handoff: false], [start: {100}, stop: {900}]] do
      nd = Array.read!(array, opts)
      {first} = Keyword.get(opts, :start, {0})
      assert nd.data == binary_part(expected, first * 4, byte_size(nd.data))
    end
  end

  test "a short zstd chunk is decode_failed on every read path and for a partial write",
       %{sidecar: sidecar, dir: dir} do
    assert make_arrays(dir) =~ "zarr-python refused: ValueError"
    path = Path.join(dir, "bad")
    chunk_file = Path.join([path, "c", "1"])
    before = File.read!(chunk_file)
    bad = ZarrBridge.open!(path: path, server: sidecar)

    reads = [
      [handoff: true],
      [handoff: false],
      [handoff: false, start: {@chunk + 10}, stop: {2 * @chunk - 10}],
      [start: {@chunk - 5}, stop: {3 * @chunk + 5}]
    ]

    for opts <- reads do
      distinct_values(sidecar, dir)
      assert {:error, %Error{code: :decode_failed} = e} = Array.read(bad, opts), inspect(opts)
      assert e.details["chunk"] == "c/1"
      assert e.message =~ "'c/1'" and e.message =~ path
    end

    distinct_values(sidecar, dir)
    data = NDArray.new!(for(_ <- 1..4, into: <<>>, do: <<77::signed-little-32>>), {4}, :int32)

    assert {:error, %Error{code: :decode_failed} = e} =
             Array.write(bad, data, start: {@chunk + 3})

    assert e.details["chunk"] == "c/1"
    assert File.read!(chunk_file) == before

    # the sidecar keeps serving, and the good chunks still read
    assert Array.read!(bad, start: {0}, stop: {@chunk}).data ==
             for(i <- 0..(@chunk - 1), into: <<>>, do: <<i * 3 - 1000::signed-little-32>>)
  end
end
