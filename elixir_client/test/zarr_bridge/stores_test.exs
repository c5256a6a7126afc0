defmodule ZarrBridge.StoresTest do
  # Zip and memory stores, node paths, confinement and raw chunk copies, on
  # real sidecars; zarr-python and Python's zipfile check what lands on disk.
  use ExUnit.Case, async: true

  import ZarrBridge.Test.TmpDir

  alias ZarrBridge.{Array, Error, Group, NDArray, Sidecar}
  alias ZarrBridge.Test.{Python, SidecarCase}

  @moduletag timeout: 180_000

  describe "zip" do
    test "Elixir writes v2 and v3 hierarchies; every request leaves a valid archive; zarr-python reads" do
      dir = tmp_dir("stores")

      for format <- [2, 3] do
        zip = Path.join(dir, "out-v#{format}.zip")
        {:ok, root} = Group.create(storage: :zip, path: zip, zarr_version: format)
        assert valid_zip?(zip)

        {:ok, a} =
          Group.create_array(root, "data/values",
            shape: {6, 5},
            chunks: {4, 2},
            dtype: :float32,
            compressor: :zlib,
            attributes: %{"units" => "m"}
          )

        nd = NDArray.from_list!(Enum.map(0..29, &(&1 / 4)), {6, 5}, :float32)
        :ok = Array.write(a, nd)
        assert valid_zip?(zip)
        # a partial overwrite: read-modify-write inside the archive
        :ok = Array.set_slice(a, {{-1.0, -2.0}}, start: {5, 3})
        assert valid_zip?(zip)

        {:ok, s} = Group.create_array(root, "names", shape: {3}, dtype: :string)
        :ok = Array.write(s, NDArray.from_list!(["x", "", "ÿ"], {3}, :string))
        :ok = Group.update_attributes(root, %{"done" => true})
        assert valid_zip?(zip)
        # no temporary files are left next to the archive
        assert File.ls!(dir) |> Enum.filter(&String.contains?(&1, "v#{format}")) == [
                 "out-v#{format}.zip"
               ]
      end

      out =
        Python.run!(
          Python.prelude() <>
            """
            for fmt in (2, 3):
                st = ZipStore(f'{sys.argv[1]}/out-v{fmt}.zip', mode='r')
                g = zarr.open_group(st, mode='r')
                a = g['data/values']
                v = a[...]
                want = (np.arange(30, dtype='f4') / 4).reshape(6, 5)
                want[5, 3:5] = [-1, -2]
                assert a.metadata.zarr_format == fmt and (v == want).all(), v
                assert dict(a.attrs) == {'units': 'm'}
                print(fmt, list(g['names'][...]), dict(g.attrs))
            """,
          [dir]
        )

      assert out == "2 ['x', '', 'ÿ'] {'done': True}\n3 ['x', '', 'ÿ'] {'done': True}\n"
    end

    test "zarr-python's archives read in Elixir, and Elixir adds to them" do
      dir = tmp_dir("stores")

      Python.run!(
        Python.prelude() <>
          """
          for fmt in (2, 3):
              st = ZipStore(f'{sys.argv[1]}/py-v{fmt}.zip', mode='w')
              g = zarr.open_group(st, mode='w', zarr_format=fmt, attributes={'from': 'python'})
              a = g.create_array('grid', shape=(4, 4), chunks=(2, 2), dtype='int64')
              a[...] = np.arange(16).reshape(4, 4)
              a[0, 0] = -1   # the chunk is written twice: a duplicate entry
              zarr.consolidate_metadata(st)   # rewrites the root document
              st.close()
          """,
        [dir]
      )

      for format <- [2, 3] do
        zip = Path.join(dir, "py-v#{format}.zip")
        {:ok, g} = Group.open(storage: :zip, path: zip)
        assert g.consolidated and g.attributes == %{"from" => "python"}
        {:ok, grid} = Group.open_array(g, "grid")
        expected = [-1 | Enum.to_list(1..15)]
        assert NDArray.to_list(Array.read!(grid)) == expected
        {:ok, keys} = Array.chunk_keys(grid)
        assert length(keys) == 4

        {:ok, added} = Group.create_array(g, "added", shape: {2}, dtype: :uint8)
        :ok = Array.set_slice(added, {1, 2})
        {:ok, _} = ZarrBridge.consolidate_metadata(storage: :zip, path: zip)
        assert Group.members!(g) == [{"added", :array}, {"grid", :array}]
      end

      out =
        Python.run!(
          Python.prelude() <>
            """
            for fmt in (2, 3):
                g = zarr.open_group(ZipStore(f'{sys.argv[1]}/py-v{fmt}.zip', mode='r'), mode='r')
                print(fmt, g['grid'][0].tolist(), g['added'][:].tolist())
            """,
          [dir]
        )

      assert out == "2 [-1, 1, 2, 3] [1, 2]\n3 [-1, 1, 2, 3] [1, 2]\n"
    end

    test "an archive whose entries escape is refused with :forbidden_path" do
      dir = tmp_dir("stores")
      zip = Path.join(dir, "evil.zip")

      Python.run!(
        """
        import sys, zipfile, json
        with zipfile.ZipFile(sys.argv[1], 'w') as z:
            z.writestr('zarr.json', json.dumps({'zarr_format': 3, 'node_type': 'group', 'attributes': {}}))
            z.writestr('../escaped/zarr.json', '{}')
        """,
        [zip]
      )

      assert {:error, %Error{code: :forbidden_path}} = Group.open(storage: :zip, path: zip)

      assert {:error, %Error{code: :forbidden_path}} =
               ZarrBridge.open(storage: :zip, path: zip, node: "x")

      # a node path that escapes, in a good archive
      {:ok, _} = Group.create(storage: :zip, path: Path.join(dir, "good.zip"))

      assert {:error, %Error{code: :forbidden_path}} =
               Group.open(storage: :zip, path: Path.join(dir, "good.zip"), node: "../x")

      assert {:ok, %{"pong" => true}} = Sidecar.call(Sidecar, "ping", %{})
    end

    test "concurrent writers to one archive all land" do
      dir = tmp_dir("stores")
      zip = Path.join(dir, "busy.zip")
      {:ok, root} = Group.create(storage: :zip, path: zip)

      arrays =
        for i <- 1..6 do
          {:ok, a} = Group.create_array(root, "a#{i}", shape: {8}, chunks: {4}, dtype: :int32)
          a
        end

      arrays
      |> Task.async_stream(
        fn a ->
          i = a.node |> String.trim_leading("a") |> String.to_integer()
          Array.write(a, NDArray.from_list!(Enum.map(1..8, &(&1 * i)), {8}, :int32))
        end,
        max_concurrency: 6,
        timeout: 60_000
      )
      |> Enum.each(fn {:ok, result} -> assert result == :ok end)

      for a <- arrays do
        i = a.node |> String.trim_leading("a") |> String.to_integer()
        assert NDArray.to_list(Array.read!(a)) == Enum.map(1..8, &(&1 * i))
      end

      assert valid_zip?(zip)
    end
  end

  describe "memory" do
    test "stores are named, separate per name and per sidecar, and live as long as the sidecar" do
      name = "stores-#{System.unique_integer([:positive])}"
      other = name <> "-other"
      private = SidecarCase.start_sidecar()

      {:ok, a} =
        ZarrBridge.create(storage: :memory, path: name, node: "x", shape: {3}, dtype: :int16)

      :ok = Array.set_slice(a, {1, 2, 3})
      assert a.storage == :memory and a.path == name and a.node == "x"
      assert a.store == %{"kind" => "memory", "name" => name}

      # the same name sees it again; another name and another sidecar do not
      assert {:ok, b} = ZarrBridge.open(storage: :memory, path: name, node: "x")
      assert Array.get_slice(b) == {:ok, {1, 2, 3}}

      assert {:error, %Error{code: :not_found}} =
               ZarrBridge.open(storage: :memory, path: other, node: "x")

      assert {:error, %Error{code: :not_found}} =
               ZarrBridge.open(storage: :memory, path: name, node: "x", server: private)

      # a store in the private sidecar is gone when that sidecar restarts
      {:ok, p} =
        ZarrBridge.create(storage: :memory, path: name, shape: {1}, dtype: :int8, server: private)

      :ok = Array.set_slice(p, {9})
      assert {:error, %Error{code: :sidecar_exited}} = Sidecar.call(private, "crash", %{})

      assert SidecarCase.eventually(
               fn ->
                 match?(
                   {:error, %Error{code: :not_found}},
                   ZarrBridge.open(storage: :memory, path: name, server: private)
                 )
               end,
               20_000
             )

      # the default sidecar's store is untouched
      assert Array.get_slice(b) == {:ok, {1, 2, 3}}
    end

    test "zarr v2 and v3 arrays, attributes, resize and raw chunks in memory" do
      name = "stores-ops-#{System.unique_integer([:positive])}"

      for format <- [2, 3] do
        {:ok, a} =
          ZarrBridge.create(
            storage: :memory,
            path: name,
            node: "v#{format}/a",
            shape: {4},
            chunks: {2},
            dtype: :float64,
            zarr_version: format,
            attributes: %{"f" => format}
          )

        :ok = Array.set_slice(a, {1.0, 2.0, 3.0, 4.0})
        :ok = Array.update_attributes(a, %{"g" => 1})
        assert Array.get_attributes(a) == {:ok, %{"f" => format, "g" => 1}}
        {:ok, a} = Array.resize(a, {6})
        assert a.metadata.shape == {6}
        assert Array.get_slice(a) == {:ok, {1.0, 2.0, 3.0, 4.0, 0.0, 0.0}}
        {:ok, keys} = Array.chunk_keys(a)
        assert length(keys) == 2
        {:ok, raw} = Array.read_chunk_raw(a, {1})
        :ok = Array.write_chunk_raw(a, {2}, raw)
        assert Array.get_slice(a) == {:ok, {1.0, 2.0, 3.0, 4.0, 3.0, 4.0}}
      end
    end
  end

  describe "confinement" do
    test "allowed roots confine zip files and directories, symlinks resolved" do
      dir = tmp_dir("stores")
      inside = Path.join(dir, "inside")
      outside = Path.join(dir, "outside")
      File.mkdir_p!(inside)
      File.mkdir_p!(outside)
      File.ln_s!(outside, Path.join(inside, "link"))
      sidecar = SidecarCase.start_sidecar(allowed_roots: [inside])

      assert {:ok, _} =
               Group.create(storage: :zip, path: Path.join(inside, "ok.zip"), server: sidecar)

      assert {:ok, _} = Group.create(path: Path.join(inside, "ok-dir"), server: sidecar)

      for {storage, path} <- [
            zip: Path.join(outside, "no.zip"),
            zip: Path.join([inside, "link", "no.zip"]),
            filesystem: Path.join(outside, "no-dir"),
            filesystem: Path.join([inside, "link", "no-dir"])
          ] do
        assert {:error, %Error{code: :forbidden_path}} =
                 Group.create(storage: storage, path: path, server: sidecar),
               "#{storage} #{path}"

        assert {:error, %Error{code: :forbidden_path}} =
                 ZarrBridge.create(
                   storage: storage,
                   path: path,
                   shape: {1},
                   dtype: :int8,
                   server: sidecar
                 )
      end

      assert File.ls!(outside) == []
      # memory stores have no path to confine
      assert {:ok, _} = Group.create(storage: :memory, path: "confined", server: sidecar)
    end
  end

  test "raw chunks copy an array between stores, byte for byte" do
    dir = tmp_dir("stores")
    mem = "raw-copy-#{System.unique_integer([:positive])}"

    for format <- [2, 3] do
      opts = [
        shape: {10, 10},
        chunks: {4, 4},
        dtype: :int32,
        compressor: {:zstd, level: 5},
        zarr_version: format
      ]

      {:ok, src} = ZarrBridge.create([path: Path.join(dir, "src-v#{format}")] ++ opts)
      data = NDArray.from_list!(Enum.to_list(1..100), {10, 10}, :int32)
      :ok = Array.write(src, data)
      {:ok, keys} = Array.chunk_keys(src)
      assert length(keys) == 9

      targets = [
        ZarrBridge.create!([storage: :zip, path: Path.join(dir, "copy-v#{format}.zip")] ++ opts),
        ZarrBridge.create!([storage: :memory, path: mem, node: "v#{format}"] ++ opts)
      ]

      for target <- targets do
        for key <- keys do
          :ok = Array.write_chunk_raw(target, key, Array.read_chunk_raw!(src, key))
        end

        assert Array.chunk_keys(target) == {:ok, keys}
        assert Array.read(target) == {:ok, data}
      end
    end

    out =
      Python.run!(
        Python.prelude() <>
          """
          for fmt in (2, 3):
              z = zarr.open_array(ZipStore(f'{sys.argv[1]}/copy-v{fmt}.zip', mode='r'), mode='r')
              print(fmt, int(z[...].sum()))
          """,
        [dir]
      )

    assert out == "2 5050\n3 5050\n"
  end

  test "the seed's archive interchange flow: archive_interchange.py, .exs, then .py again" do
    dir = tmp_dir("stores")
    script = Path.expand("../../../scripts/run_example.sh", __DIR__)

    {out_py, status} =
      System.cmd("bash", [script, "archive_interchange.py", dir], stderr_to_stdout: true)

    assert status == 0, out_py
    assert File.exists?(Path.join(dir, "archive.zip"))

    {out_ex, status} =
      System.cmd("bash", [script, "archive_interchange.exs", dir],
        stderr_to_stdout: true,
        env: [{"MIX_ENV", "test"}]
      )

    assert status == 0, out_ex
    assert out_ex =~ "├── labels"
    assert out_ex =~ "│   └── names (200,) string"
    assert out_ex =~ "└── measurements (200, 100) float64"
    assert out_ex =~ "units: meters"
    assert out_ex =~ ~s(first names: ["sample-0", "sample-1", "sample-2"])

    # Team A reads Team B's results with zarr-python
    out =
      Python.run!(
        Python.prelude() <>
          """
          a = zarr.open_group(ZipStore(sys.argv[1] + '/archive.zip', mode='r'), mode='r')
          r = zarr.open_group(ZipStore(sys.argv[1] + '/results.zip', mode='r'), mode='r')
          means = r['row_means']
          assert means.metadata.zarr_format == 3 and means.dtype == np.float64
          assert means.metadata.dimension_names == ('sample',)
          assert np.allclose(means[...], a['measurements'][...].mean(axis=1), rtol=0, atol=1e-9)
          assert list(r['labels'][...]) == list(a['labels/names'][...])
          print(dict(r.attrs)['source'], means.attrs['units'], r.metadata.consolidated_metadata is not None)
          """,
        [dir]
      )

    assert out == "archive.zip meters True\n"

    # ... and the example's own Python step, run again, checks them too
    {out_py, status} =
      System.cmd("bash", [script, "archive_interchange.py", dir], stderr_to_stdout: true)

    assert status == 0, out_py
    assert out_py =~ "row_means match Team A's data (200 rows, units meters); labels match."
  end

  # ------------------------------------------------------------------

  defp valid_zip?(path) do
    Python.run!(
      """
      import sys, zipfile
      with zipfile.ZipFile(sys.argv[1]) as z:
          print(z.testzip())
      """,
      [path]
    ) == "None\n"
  end
end
