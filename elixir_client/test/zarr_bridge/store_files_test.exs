defmodule ZarrBridge.StoreFilesTest do
  # Store files that could block the sidecar (a FIFO as a chunk or as
  # zarr.json) through the Elixir client, on a real sidecar: each read fails
  # at once with :store_error and the sidecar keeps serving. The Python side
  # of the same promises is in tests/test_store_files.py.
  use ZarrBridge.Test.SidecarCase, async: true

  import ZarrBridge.Test.TmpDir

  alias ZarrBridge.{Array, NDArray}

  @moduletag timeout: 120_000
  @fast 5_000

  defp mkfifo!(path) do
    File.rm_rf!(path)
    {_, 0} = System.cmd("mkfifo", [path])
  end

  defp new_array(sc, dir) do
    {:ok, a} =
      ZarrBridge.create(
        path: dir,
        server: sc,
        shape: {8},
        chunks: {4},
        dtype: :int32,
        fill_value: 0
      )

    :ok = Array.write(a, NDArray.from_list!(Enum.to_list(0..7), {8}, :int32))
    a
  end

  defp timed(fun) do
    t0 = System.monotonic_time(:millisecond)
    result = fun.()
    assert System.monotonic_time(:millisecond) - t0 < @fast
    result
  end

  test "a FIFO chunk and a FIFO zarr.json are store errors; the sidecar keeps serving" do
    sc = start_sidecar(workers: 2)
    dir = tmp_dir("storefiles")
    healthy = new_array(sc, Path.join(dir, "healthy"))
    blocked = new_array(sc, Path.join(dir, "chunk"))
    mkfifo!(Path.join([dir, "chunk", "c", "1"]))

    # more reads than workers: none may stay blocked on the FIFO
    for _ <- 1..3 do
      assert {:error, %Error{code: :store_error} = e} =
               timed(fn -> Array.read(blocked, timeout: @fast) end)

      assert e.message =~ "FIFO"
    end

    meta_dir = Path.join(dir, "meta")
    new_array(sc, meta_dir)
    mkfifo!(Path.join(meta_dir, "zarr.json"))

    results =
      timed(fn ->
        1..40
        |> Task.async_stream(fn _ -> ZarrBridge.open(path: meta_dir, server: sc) end,
          max_concurrency: 40,
          timeout: @fast
        )
        |> Enum.map(fn {:ok, r} -> r end)
      end)

    assert Enum.all?(results, &match?({:error, %Error{code: :store_error}}, &1))

    assert {:ok, _} = Sidecar.info(sc)
    assert {:ok, nd} = timed(fn -> Array.read(healthy, timeout: @fast) end)
    assert NDArray.to_list(nd) == Enum.to_list(0..7)
  end

  test "bad dims and non-Zarr containers get specific codes, not :internal" do
    sc = start_sidecar()
    dir = tmp_dir("storefiles")

    assert {:error, %Error{code: :invalid_params, details: %{"param" => "shape"}}} =
             ZarrBridge.create(
               path: Path.join(dir, "a"),
               server: sc,
               shape: {2 ** 63},
               chunks: {4},
               dtype: :int8
             )

    assert {:error, %Error{code: :invalid_params, details: %{"param" => "chunks"}}} =
             ZarrBridge.create(
               path: Path.join(dir, "b"),
               server: sc,
               shape: {8},
               chunks: {0},
               dtype: :int8
             )

    # a v2 array written by hand with a chunk length of 0
    File.mkdir_p!(Path.join(dir, "zero"))

    File.write!(
      Path.join([dir, "zero", ".zarray"]),
      ~s({"zarr_format": 2, "shape": [8], "chunks": [0], "dtype": "<i4", "compressor": null,
          "fill_value": 0, "order": "C", "filters": null})
    )

    assert {:error, %Error{code: :invalid_metadata}} =
             ZarrBridge.open(path: Path.join(dir, "zero"), server: sc)

    # an N5 container
    File.mkdir_p!(Path.join(dir, "n5"))
    File.write!(Path.join([dir, "n5", "attributes.json"]), ~s({"n5": "2.5.1"}))

    assert {:error, %Error{code: :not_found, message: message}} =
             ZarrBridge.open(path: Path.join(dir, "n5"), server: sc)

    assert message =~ "N5 container" and message =~ "Zarr v2 and v3"
  end
end
