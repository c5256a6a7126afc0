defmodule ZarrBridge.WriteHandoffTest do
  # The upload handoff (PROTOCOL.md section 3) against a real sidecar of our
  # own: Array.write hands large data over in a /dev/shm file, zarr-python
  # reads back what was written, and the file is gone however the request
  # ended. Not async: the sidecar is private, but the machine has two cores.
  use ZarrBridge.Test.SidecarCase, async: false

  import Bitwise

  alias ZarrBridge.{Array, NDArray}
  alias ZarrBridge.Test.Python

  @moduletag timeout: 300_000
  @mib 1024 * 1024

  setup do
    sidecar = start_sidecar(workers: 2)
    dir = Path.join(System.tmp_dir!(), "zb-wh-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    # A timed-out write may still be finishing chunk files when the test
    # ends (its sidecar is stopped first, and its workers with it): retry.
    on_exit(fn -> eventually(fn -> match?({:ok, _}, File.rm_rf(dir)) end, 10_000) end)
    %{sidecar: sidecar, os_pid: Sidecar.os_pid!(sidecar), dir: dir}
  end

  # The upload files (and staging directories) of this sidecar now in /dev/shm.
  defp upload_files(os_pid), do: Path.wildcard("/dev/shm/pybridge-#{os_pid}-up-*")

  # Bytes this client wrote to the sidecar's port so far.
  defp port_output(sidecar) do
    {:output, n} = Port.info(elem(:sys.get_state(sidecar), 1).port, :output)
    n
  end

  # float64 values with a checkable pattern: element i is i / 4.
  defp ramp(n), do: for(i <- 0..(n - 1), into: <<>>, do: <<i / 4::float-little-64>>)

  defp create(sidecar, path, shape, chunks, extra \\ []) do
    ZarrBridge.create!(
      [path: path, shape: shape, chunks: chunks, dtype: :float64, server: sidecar] ++ extra
    )
  end

  # zarr-python's view of the array equals i / 4 everywhere.
  defp zarr_agrees?(path, n) do
    Python.run!(
      """
      import sys, zarr, numpy as np
      z = zarr.open_array(sys.argv[1], mode='r')
      print(bool((z[...].reshape(-1) == np.arange(int(sys.argv[2])) / 4).all()))
      """,
      [path, Integer.to_string(n)]
    ) == "True\n"
  end

  describe "Array.write through shared memory" do
    test "large data goes through a file, zarr-python reads it back, the file is gone",
         %{sidecar: sidecar, os_pid: os_pid, dir: dir} do
      for {name, extra} <- [
            {"plain", [compressor: {:zstd, level: 3}]},
            {"sharded", [shards: {256, 512}]}
          ] do
        path = Path.join(dir, name)
        array = create(sidecar, path, {1024, 1024}, {128, 128}, extra)
        data = ramp(1024 * 1024)

        before = port_output(sidecar)
        assert :ok = Array.write(array, data, timeout: 120_000)
        # the request went through the pipe, not its 8 MiB of data
        assert port_output(sidecar) - before < 64 * 1024

        assert upload_files(os_pid) == []
        assert zarr_agrees?(path, 1024 * 1024)
        assert {:ok, %NDArray{data: ^data}} = Array.read(array, timeout: 120_000)
      end
    end

    test "handoff: false streams, and small data streams unless handoff: true",
         %{sidecar: sidecar, os_pid: os_pid, dir: dir} do
      path = Path.join(dir, "a")
      array = create(sidecar, path, {1024, 512}, {256, 256})
      data = ramp(1024 * 512)

      before = port_output(sidecar)
      assert :ok = Array.write(array, data, handoff: false)
      assert port_output(sidecar) - before > 4 * @mib

      # 1 MiB: below the 4 MiB threshold, so a stream by default ...
      part = binary_part(data, 0, 128 * 512 * 8 * 2)
      before = port_output(sidecar)
      assert :ok = Array.write(array, part, stop: {256, 512})
      assert port_output(sidecar) - before > @mib

      # ... and a file when asked for, even for a few bytes
      before = port_output(sidecar)
      assert :ok = Array.write(array, binary_part(data, 0, 16), stop: {1, 2}, handoff: true)
      assert :ok = Array.write(array, part, stop: {256, 512}, handoff: true)
      assert port_output(sidecar) - before < 4096

      assert upload_files(os_pid) == []
      assert zarr_agrees?(path, 1024 * 512)
      assert_raise ArgumentError, fn -> Array.write(array, data, handoff: :maybe) end
    end

    test "append and raw chunk writes hand large data over too",
         %{sidecar: sidecar, os_pid: os_pid, dir: dir} do
      path = Path.join(dir, "a")
      array = create(sidecar, path, {0, 1024}, {256, 1024}, compressor: nil)
      data = ramp(1024 * 1024)
      nd = NDArray.new!(data, {1024, 1024}, :float64)

      before = port_output(sidecar)
      assert {:ok, array} = Array.append(array, nd, timeout: 60_000)
      assert array.metadata.shape == {1024, 1024}
      {:ok, raw} = Array.read_chunk_raw(array, {1, 0})
      assert :ok = Array.write_chunk_raw(array, {0, 0}, raw, handoff: true)
      assert port_output(sidecar) - before < 64 * 1024

      assert {:ok, chunk} = Array.read(array, stop: {256, 1024})
      assert chunk.data == binary_part(data, 256 * 1024 * 8, 256 * 1024 * 8)
      assert upload_files(os_pid) == []
    end

    test "the file is 0600, created under the sidecar's prefix, and nothing else is left",
         %{sidecar: sidecar, os_pid: os_pid, dir: dir} do
      # bzip2 at level 9 on small chunks: slow enough to look at the file meanwhile
      array =
        create(sidecar, Path.join(dir, "a"), {1024, 2048}, {64, 64},
          compressor: {:bzip2, level: 9}
        )

      task = Task.async(fn -> Array.write(array, ramp(1024 * 2048), timeout: 120_000) end)

      # (the writer's staging directory, "….stage", lives a moment before
      # the file has its name: it is not the file)
      files = fn -> Enum.reject(upload_files(os_pid), &String.ends_with?(&1, ".stage")) end
      assert [file] = eventually(fn -> match?([_], files.()) && files.() end, 10_000)

      assert Regex.match?(~r"^/dev/shm/pybridge-#{os_pid}-up-[^/]+$", file)
      assert (File.lstat!(file).mode &&& 0o777) == 0o600
      assert File.lstat!(file).type == :regular
      assert :ok = Task.await(task, 120_000)
      assert upload_files(os_pid) == []
    end
  end

  describe "the file goes whatever happens" do
    test "after an error reply", %{sidecar: sidecar, os_pid: os_pid, dir: dir} do
      path = Path.join(dir, "a")
      create(sidecar, path, {16, 16}, {8, 8})
      store = %{"kind" => "filesystem", "path" => path}

      before = port_output(sidecar)

      # a shape that the data does not fill
      assert {:error, %Error{code: :data_size_mismatch}} =
               Sidecar.call(sidecar, "array.write", %{"store" => store, "shape" => [4, 4]},
                 upload: :binary.copy(<<0>>, 65_536),
                 handoff: true
               )

      # a read-only request
      assert {:error, %Error{code: :read_only}} =
               Sidecar.call(
                 sidecar,
                 "array.write",
                 %{"store" => store, "shape" => [16, 16], "mode" => "r"},
                 upload: ramp(16 * 16),
                 handoff: true
               )

      # both went as files (the data did not cross the pipe), and both files are gone
      assert port_output(sidecar) - before < 4096
      assert upload_files(os_pid) == []
      assert {:ok, %{"pong" => true}} = Sidecar.call(sidecar, "ping", %{})
    end

    test "after a timeout (the request is cancelled)",
         %{sidecar: sidecar, os_pid: os_pid, dir: dir} do
      array =
        create(sidecar, Path.join(dir, "a"), {1024, 2048}, {64, 64},
          compressor: {:bzip2, level: 9}
        )

      assert {:error, %Error{code: :timeout}} =
               Array.write(array, ramp(1024 * 2048), timeout: 300)

      assert eventually(fn -> upload_files(os_pid) == [] end, 10_000)
      assert {:ok, %{"pong" => true}} = Sidecar.call(sidecar, "ping", %{})
    end

    test "a method that does not take \"shm\" refuses it; the client removes the file",
         %{sidecar: sidecar, os_pid: os_pid} do
      assert {:error, %Error{code: :invalid_params, details: %{"param" => "shm"}}} =
               Sidecar.call(sidecar, "echo", %{}, upload: "abc", handoff: true)

      assert upload_files(os_pid) == []
    end

    test "an upload over the request limit is refused before a file is written", %{dir: dir} do
      sidecar = start_sidecar(workers: 1, max_request_bytes: 1000)
      os_pid = Sidecar.os_pid!(sidecar)
      array = create(sidecar, Path.join(dir, "a"), {64, 64}, {16, 16})

      assert {:error, %Error{code: :too_large}} = Array.write(array, ramp(64 * 64), handoff: true)
      assert upload_files(os_pid) == []
    end
  end

  describe "files the sidecar refuses" do
    setup %{sidecar: sidecar, os_pid: os_pid, dir: dir} do
      path = Path.join(dir, "a")
      create(sidecar, path, {16, 16}, {8, 8})
      params = %{"store" => %{"kind" => "filesystem", "path" => path}, "shape" => [16, 16]}
      name = "/dev/shm/pybridge-#{os_pid}-up-test#{System.unique_integer([:positive])}"
      on_exit(fn -> File.rm_rf(name) end)
      %{params: params, name: name}
    end

    defp write_file(path, data) do
      File.write!(path, data)
      File.chmod!(path, 0o600)
    end

    defp shm_write(sidecar, params, path, bytes) do
      Sidecar.call(
        sidecar,
        "array.write",
        Map.put(params, "shm", %{"path" => path, "bytes" => bytes})
      )
    end

    test "a path outside the sidecar's prefix is forbidden and left alone",
         %{sidecar: sidecar, os_pid: os_pid, params: params, dir: dir} do
      outside = Path.join(dir, "data")
      write_file(outside, ramp(256))
      other = "/dev/shm/pybridge-#{os_pid + 1}-up-test#{System.unique_integer([:positive])}"
      write_file(other, ramp(256))
      on_exit(fn -> File.rm(other) end)

      for path <- [outside, other, "/dev/shm/pybridge-#{os_pid}-up/../../../#{outside}"] do
        assert {:error, %Error{code: :forbidden_path}} = shm_write(sidecar, params, path, 2048)
      end

      assert File.read!(outside) == ramp(256)
      assert File.read!(other) == ramp(256)
      assert {:ok, %{"pong" => true}} = Sidecar.call(sidecar, "ping", %{})
    end

    test "a symlink is forbidden (its target is kept), a directory is invalid",
         %{sidecar: sidecar, params: params, name: name, dir: dir} do
      target = Path.join(dir, "target")
      write_file(target, ramp(256))
      File.ln_s!(target, name)

      assert {:error, %Error{code: :forbidden_path}} = shm_write(sidecar, params, name, 2048)
      assert File.read!(target) == ramp(256)
      assert {:error, :enoent} = File.lstat(name)

      File.mkdir!(name)

      assert {:error, %Error{code: :invalid_params, details: %{"param" => "shm"}}} =
               shm_write(sidecar, params, name, 2048)

      assert File.dir?(name)
      assert {:ok, %{"pong" => true}} = Sidecar.call(sidecar, "ping", %{})
    end

    test "a file of the wrong size is a data size mismatch, and removed",
         %{sidecar: sidecar, params: params, name: name} do
      write_file(name, ramp(255))

      assert {:error, %Error{code: :data_size_mismatch, details: details}} =
               shm_write(sidecar, params, name, 2048)

      assert details == %{"expected" => 2048, "got" => 2040}
      assert {:error, :enoent} = File.lstat(name)
      assert {:ok, %{"pong" => true}} = Sidecar.call(sidecar, "ping", %{})
    end
  end
end
