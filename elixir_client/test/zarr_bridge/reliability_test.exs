defmodule ZarrBridge.ReliabilityTest do
  # Faults injected for real through the Elixir client (issue 6): the
  # sidecar SIGKILLed in the middle of a streamed read and of a streamed
  # write, a worker killed while it decodes, the BEAM SIGKILLed under load,
  # a sidecar that exits at every start, 10 000 requests in flight, and
  # concurrent writers through one and two sidecars. The Python side of the
  # same promises is in tests/test_reliability.py and tests/test_security.py.
  #
  # Not async: these tests kill processes and load the two cores.
  use ZarrBridge.Test.SidecarCase, async: false

  import ZarrBridge.Test.TmpDir

  import ExUnit.CaptureLog

  alias ZarrBridge.Test.Python

  @mib 1024 * 1024

  ## Arrays of int32 whose chunks are whole row bands, so that chunk k is
  ## one contiguous byte range of the array (C order). Generation g of the
  ## content fills chunk k with the value g * 1000 + k.

  defp fs(dir), do: %{"kind" => "filesystem", "path" => dir}

  defp create_banded!(pid, dir, rows, cols, band, compressor) do
    params = %{
      "store" => fs(dir),
      "path" => "a",
      "shape" => [rows, cols],
      "chunks" => [band, cols],
      "dtype" => "int32",
      "compressor" => compressor,
      "fill_value" => -1
    }

    {:ok, _} = Sidecar.call(pid, "array.create", params, timeout: 60_000)
  end

  defp generation(rows, cols, band, gen) do
    for k <- 0..(div(rows, band) - 1),
        do: :binary.copy(<<gen * 1000 + k::little-32>>, band * cols)
  end

  defp write_all(pid, dir, rows, cols, data, timeout \\ 120_000) do
    Sidecar.call(
      pid,
      "array.write",
      %{"store" => fs(dir), "path" => "a", "shape" => [rows, cols]},
      upload: data,
      timeout: timeout
    )
  end

  defp read_all(pid, dir, timeout \\ 120_000) do
    Sidecar.call(pid, "array.read", %{"store" => fs(dir), "path" => "a"}, timeout: timeout)
  end

  # Every chunk holds exactly one generation's content: returns the
  # generation of each chunk, or flunks naming the torn chunk.
  defp chunk_generations(data, rows, cols, band, allowed) do
    chunk_bytes = band * cols * 4

    for k <- 0..(div(rows, band) - 1) do
      chunk = binary_part(data, k * chunk_bytes, chunk_bytes)
      <<first::little-32, _::binary>> = chunk
      gen = div(first, 1000)

      unless rem(first, 1000) == k and gen in allowed and
               chunk == :binary.copy(<<first::little-32>>, band * cols) do
        flunk("chunk #{k} is torn or foreign: it starts with #{first}")
      end

      gen
    end
  end

  # zarr-python, independently: every chunk file decodes and holds one value.
  defp zarr_python_check!(dir, band) do
    Python.run!(
      """
      import sys, warnings
      warnings.filterwarnings('ignore')
      import numpy as np, zarr
      z = zarr.open_array(sys.argv[1], path='a', mode='r')
      a = z[...]
      band = int(sys.argv[2])
      for k in range(a.shape[0] // band):
          chunk = a[k * band:(k + 1) * band]
          assert (chunk == chunk.flat[0]).all(), f'chunk {k} is torn'
          assert chunk.flat[0] % 1000 == k, f'chunk {k} holds {chunk.flat[0]}'
      print('ok')
      """,
      [dir, Integer.to_string(band)]
    )
  end

  # Ready again with a new OS process: `info` answers from the connection's
  # table, so right after a kill it may still describe the killed sidecar.
  defp await_restarted(pid, killed_os_pid) do
    assert eventually(
             fn ->
               match?({:ok, _}, Sidecar.info(pid)) and
                 match?({:ok, os_pid} when os_pid != killed_os_pid, Sidecar.os_pid(pid))
             end,
             30_000
           ),
           "the sidecar did not come back"
  end

  defp kill9(os_pid), do: System.cmd("kill", ["-KILL", Integer.to_string(os_pid)])

  ## /proc helpers: children and CPU time of OS processes

  defp proc_stat(pid) do
    case File.read("/proc/#{pid}/stat") do
      {:ok, text} ->
        # "pid (comm) state ppid ... utime ..."; comm may hold ") ", so
        # split at the last one
        {pos, 2} = text |> :binary.matches(") ") |> List.last()
        fields = text |> binary_part(pos + 2, byte_size(text) - pos - 2) |> String.split(" ")

        %{
          state: Enum.at(fields, 0),
          ppid: String.to_integer(Enum.at(fields, 1)),
          utime: String.to_integer(Enum.at(fields, 11))
        }

      {:error, _} ->
        nil
    end
  end

  defp children(os_pid) do
    for path <- Path.wildcard("/proc/[0-9]*/stat"),
        pid = path |> Path.dirname() |> Path.basename() |> String.to_integer(),
        stat = proc_stat(pid),
        stat != nil and stat.ppid == os_pid and stat.state != "Z",
        do: pid
  end

  # The pool's workers: the children of the sidecar's fork server.
  defp workers(os_pid), do: Enum.flat_map(children(os_pid), &children/1)

  defp wait_workers(os_pid, n) do
    eventually(fn -> length(workers(os_pid)) == n and workers(os_pid) end, 30_000)
  end

  ## SIGKILL in the middle of streams

  describe "the sidecar SIGKILLed mid-stream" do
    @tag :capture_log
    @tag timeout: 180_000
    test "mid streamed read: :sidecar_exited, restarted, the array still reads back" do
      pid = start_sidecar(workers: 2)
      dir = tmp_dir("kill-read")
      {rows, cols, band} = {2048, 2048, 64}
      create_banded!(pid, dir, rows, cols, band, %{"id" => "zlib", "level" => 1})
      old = generation(rows, cols, band, 1)
      assert {:ok, _} = write_all(pid, dir, rows, cols, old)
      old_os_pid = Sidecar.os_pid!(pid)

      readers = for _ <- 1..4, do: Task.async(fn -> read_all(pid, dir) end)

      # Kill once stream frames of the 16 MiB results are arriving.
      assert eventually(
               fn ->
                 elem(:sys.get_state(pid), 1).pending
                 |> Map.values()
                 |> Enum.any?(fn {_ref, _pieces, frames, _bytes} -> frames > 2 end)
               end,
               30_000
             ),
             "no streamed read got under way"

      kill9(old_os_pid)

      for reply <- Task.await_many(readers, 10_000) do
        assert {:error, %Error{code: :sidecar_exited, details: %{exit_status: 137}}} = reply
      end

      assert {:ok, %{"data" => {:bin, data}}} = read_all(pid, dir)
      assert Sidecar.os_pid!(pid) != old_os_pid
      assert chunk_generations(data, rows, cols, band, [1]) |> Enum.uniq() == [1]
      assert data == IO.iodata_to_binary(old)
    end

    @tag :capture_log
    @tag timeout: 300_000
    test "mid streamed write: every chunk holds its old or its new content, never a mix" do
      pid = start_sidecar(workers: 2)
      dir = tmp_dir("kill-write")
      # 64 MiB in 64 chunks of 1 MiB, stored uncompressed: a torn chunk
      # file would be short or mixed, and both show.
      {rows, cols, band} = {4096, 4096, 64}
      create_banded!(pid, dir, rows, cols, band, nil)

      started = System.monotonic_time(:millisecond)
      assert {:ok, _} = write_all(pid, dir, rows, cols, generation(rows, cols, band, 1))
      full = System.monotonic_time(:millisecond) - started

      seen =
        for gen <- 2..3, reduce: %{killed: 0, mixed: 0} do
          acc ->
            os_pid = Sidecar.os_pid!(pid)

            writer =
              Task.async(fn ->
                write_all(pid, dir, rows, cols, generation(rows, cols, band, gen))
              end)

            # somewhere in the middle of the write
            Process.sleep(trunc(full * (0.2 + 0.3 * (gen - 2))))
            kill9(os_pid)
            reply = Task.await(writer, 120_000)

            # a second failure within 30 s is restarted after a backoff
            await_restarted(pid, os_pid)
            assert {:ok, %{"data" => {:bin, data}}} = read_all(pid, dir)
            # every chunk of any earlier generation (a killed write leaves
            # some chunks new and the others as they were)
            gens = chunk_generations(data, rows, cols, band, Enum.to_list(1..gen))
            zarr_python_check!(dir, band)

            case reply do
              {:error, %Error{code: :sidecar_exited}} ->
                mixed = if length(Enum.uniq(gens)) > 1, do: 1, else: 0
                %{acc | killed: acc.killed + 1, mixed: acc.mixed + mixed}

              {:ok, _} ->
                # it finished before the kill: all new
                assert Enum.uniq(gens) == [gen]
                acc
            end
        end

      assert seen.killed >= 1, "no write was caught by the kill: #{inspect(seen)}"

      IO.puts(
        "\n[reliability] writes killed mid-way: #{seen.killed} of 2, " <>
          "#{seen.mixed} left a mix of old and new chunks (each chunk whole)"
      )
    end
  end

  ## A worker killed while decoding

  describe "a worker killed while it decodes" do
    @tag :capture_log
    @tag timeout: 180_000
    test "only its request fails, with :worker_crashed; the others succeed; the pool heals" do
      pid = start_sidecar(workers: 2)
      os_pid = Sidecar.os_pid!(pid)
      before = wait_workers(os_pid, 2)
      assert before, "the pool did not start"

      # 32 MiB of bz2 decodes slowly enough (seconds, even on a loaded
      # machine) to be caught at it; 8 MiB sometimes finished first.
      blob_path = Path.join(tmp_dir("bz2"), "blob.bz2")

      Python.run!(
        """
        import bz2, sys, random
        rnd = random.Random(7)
        data = bytes(rnd.choice(b'abcdefgh') for _ in range(1 << 20)) * 32
        open(sys.argv[1], 'wb').write(bz2.compress(data, 1))
        """,
        [blob_path]
      )

      blob = File.read!(blob_path)
      codec = %{"id" => "bz2"}

      victim_task =
        Task.async(fn ->
          Sidecar.call(pid, "codec.decode", %{"codec" => codec}, upload: blob, timeout: 60_000)
        end)

      # small requests all along, from other processes
      small = :rand.bytes(64 * 1024)

      others =
        for i <- 1..4 do
          Task.async(fn ->
            for j <- 1..25 do
              params = %{"codec" => %{"id" => "zlib", "level" => 1}, "data" => {:bin, small}}
              {i, j, Sidecar.call(pid, "codec.encode", params, timeout: 60_000)}
            end
          end)
        end

      # the worker that burns CPU is the one decoding: over half a second it
      # uses far more than the short zlib encodes can (those total well under
      # 100 ms), even on a loaded machine
      busy =
        eventually(
          fn ->
            t0 = Map.new(workers(os_pid), &{&1, proc_stat(&1)})
            Process.sleep(500)

            case Enum.max_by(t0, fn {w, s} -> cpu_delta(w, s) end, fn -> nil end) do
              {w, s} -> if cpu_delta(w, s) >= 15, do: w
              nil -> nil
            end
          end,
          20_000
        )

      assert busy, "no worker was seen decoding"
      kill9(busy)

      assert {:error, %Error{code: :worker_crashed} = error} = Task.await(victim_task, 60_000)
      assert error.message =~ "died"

      for {i, j, reply} <- others |> Task.await_many(60_000) |> List.flatten() do
        assert {:ok, %{"data" => {:bin, _}}} = reply, "small request #{i}/#{j}: #{inspect(reply)}"
      end

      # the same sidecar, and the pool is back to two workers, one of them new
      assert Sidecar.os_pid!(pid) == os_pid
      now = wait_workers(os_pid, 2)
      assert now, "the pool did not get back to 2 workers"
      assert busy not in now and Enum.any?(now, &(&1 not in before))
      # and the new worker decodes
      assert {:ok, %{"data" => {:bin, data}}} =
               Sidecar.call(pid, "codec.decode", %{"codec" => codec},
                 upload: blob,
                 timeout: 60_000
               )

      assert byte_size(data) == 32 * @mib
    end
  end

  defp cpu_delta(w, %{utime: u0}) do
    case proc_stat(w) do
      %{utime: u1} -> u1 - u0
      nil -> 0
    end
  end

  defp cpu_delta(_w, nil), do: 0

  ## The BEAM SIGKILLed under load

  describe "the BEAM SIGKILLed during heavy traffic" do
    @tag timeout: 180_000
    test "no Python process is left after 2 s, and no shared-memory segment" do
      {:ok, %{python: python}} = ZarrBridge.Sidecar.Launcher.resolve()
      ebin = Path.dirname(:code.which(Sidecar))
      dir = tmp_dir("beam-kill")
      script = Path.join(dir, "child.exs")

      File.write!(script, """
      {:ok, _} = Application.ensure_all_started(:logger)
      Logger.configure(level: :error)
      {:ok, pid} = ZarrBridge.Sidecar.start_link(python: #{inspect(python)}, workers: 2,
        env: [{"PYBRIDGE_TEST_METHODS", "1"}])
      {:ok, _} = ZarrBridge.Sidecar.info(pid)
      store = %{"kind" => "filesystem", "path" => #{inspect(dir)}}
      {:ok, _} = ZarrBridge.Sidecar.call(pid, "array.create", %{"store" => store, "path" => "a",
        "shape" => [1024, 1024], "chunks" => [128, 1024], "dtype" => "float64"})
      data = :binary.copy(<<1.5::little-float-64>>, 1024 * 1024)
      {:ok, _} = ZarrBridge.Sidecar.call(pid, "array.write",
        %{"store" => store, "path" => "a", "shape" => [1024, 1024]}, upload: data, timeout: 60_000)
      parent = self()
      for i <- 1..16 do
        spawn(fn ->
          Stream.iterate(0, &(&1 + 1)) |> Enum.each(fn n ->
            case rem(i + n, 4) do
              0 -> ZarrBridge.Sidecar.call(pid, "array.read",
                     %{"store" => store, "path" => "a", "handoff" => true}, timeout: 60_000)
              1 -> ZarrBridge.Sidecar.call(pid, "array.write",
                     %{"store" => store, "path" => "a", "shape" => [1024, 1024]},
                     upload: data, timeout: 60_000)
              2 -> ZarrBridge.Sidecar.call(pid, "array.read", %{"store" => store, "path" => "a"},
                     timeout: 60_000)
              3 -> ZarrBridge.Sidecar.call(pid, "codec.encode",
                     %{"codec" => %{"id" => "zstd"}, "data" => {:bin, binary_part(data, 0, 200_000)}})
            end
            if n == 1 and i == 1, do: send(parent, :going)
          end)
        end)
      end
      receive do
        :going -> IO.puts("SIDECAR_OS_PID=\#{ZarrBridge.Sidecar.os_pid!(pid)}")
      end
      Process.sleep(:infinity)
      """)

      port =
        Port.open({:spawn_executable, System.find_executable("elixir")}, [
          :binary,
          :exit_status,
          :stderr_to_stdout,
          {:line, 4096},
          args: ["-pa", ebin, script]
        ])

      {:os_pid, beam} = Port.info(port, :os_pid)

      try do
        sidecar = await_line(port, "SIDECAR_OS_PID=") |> String.to_integer()
        assert wait_workers(sidecar, 2)
        # heavy traffic for a while, with handoffs and uploads under way
        Process.sleep(700)
        tree = [sidecar | descendants(sidecar)]
        kill9(beam)
        killed_at = System.monotonic_time(:millisecond)
        assert_receive {^port, {:exit_status, 137}}, 5_000

        assert eventually(fn -> not Enum.any?(tree, &os_alive?/1) end, 2_000),
               "still alive 2 s after the BEAM died: #{inspect(Enum.filter(tree, &os_alive?/1))}"

        gone_in = System.monotonic_time(:millisecond) - killed_at
        assert Path.wildcard("/dev/shm/pybridge-#{sidecar}-*") == []

        IO.puts(
          "\n[reliability] sidecar tree of #{length(tree)} processes gone #{gone_in} ms " <>
            "after the BEAM's SIGKILL; no segments left"
        )
      after
        kill9(beam)
      end
    end
  end

  defp await_line(port, prefix) do
    receive do
      {^port, {:data, {:eol, line}}} ->
        case String.split(line, prefix, parts: 2) do
          [_, rest] -> String.trim(rest)
          _ -> await_line(port, prefix)
        end

      {^port, {:exit_status, status}} ->
        flunk("the child BEAM exited with status #{status}")
    after
      60_000 -> flunk("the child BEAM printed no #{prefix}")
    end
  end

  ## A sidecar that exits at every start

  describe "a sidecar that exits at every start" do
    test "calls fail at once with the reason, and restarts back off" do
      log =
        capture_log(fn ->
          # a real Python and pybridge, given an option it refuses: exit status 2
          pid = start_supervised!({Sidecar, args: ["--no-such-option"]})

          assert eventually(
                   fn ->
                     match?(
                       {:error, %Error{code: :sidecar_unavailable}},
                       Sidecar.call(pid, "ping", %{})
                     )
                   end,
                   10_000
                 )

          assert {:error, %Error{code: :sidecar_unavailable} = error} =
                   Sidecar.call(pid, "ping", %{})

          assert %{reason: {:exit_status, 2}, retry_in_ms: retry} = error.details
          assert is_integer(retry)
          assert error.message =~ "exited (status 2) before answering hello"
          Process.sleep(4_000)
          send(self(), {:pid, pid})
        end)

      assert_received {:pid, pid}
      lines = log |> String.split("\n") |> Enum.filter(&(&1 =~ inspect(pid) and &1 =~ "failure "))
      # with the backoff (0, 100, 200, 400, 800, 1600, 3200 ms ...) about 6
      # attempts fit in 4-5 s; without it there would be hundreds
      assert length(lines) in 3..9, "#{length(lines)} start attempts:\n#{log}"

      delays =
        for line <- lines,
            [_, ms] <- [Regex.run(~r/next attempt in (\d+) ms/, line)],
            do: String.to_integer(ms)

      assert delays == Enum.sort(delays) and length(delays) >= 2, inspect(delays)
    end
  end

  ## 10 000 requests in flight

  describe "10 000 requests in flight at once" do
    @tag :capture_log
    @tag timeout: 180_000
    test "beyond max_in_flight they are refused with :overloaded; none is lost" do
      pid = start_sidecar(max_in_flight: 1_000, workers: 1)
      assert {:ok, %{"limits" => %{"max_in_flight" => 1_000}}} = Sidecar.info(pid)

      replies = many_calls(pid, 10_000, %{"ms" => 20})

      counts = Enum.frequencies_by(replies, &outcome/1)
      assert Map.keys(counts) -- [:ok, :overloaded] == [], inspect(counts)
      assert counts[:ok] + counts[:overloaded] == 10_000
      assert counts[:ok] >= 1_000 and counts[:overloaded] > 0, inspect(counts)
      assert_ping(pid)
      IO.puts("\n[reliability] 10 000 in flight, limit 1000: #{inspect(counts)}")
    end

    @tag timeout: 180_000
    test "within the default limit every one is answered" do
      pid = start_sidecar(workers: 1)
      replies = many_calls(pid, 10_000, %{"ms" => 0})
      assert Enum.frequencies_by(replies, &outcome/1) == %{ok: 10_000}
    end
  end

  defp many_calls(pid, n, params) do
    parent = self()
    gate = make_ref()

    callers =
      for i <- 1..n do
        spawn_link(fn ->
          receive do
            ^gate -> :go
          end

          send(parent, {:reply, i, Sidecar.call(pid, "sleep", params, timeout: 120_000)})
        end)
      end

    Enum.each(callers, &send(&1, gate))

    for _ <- 1..n do
      receive do
        {:reply, _i, reply} -> reply
      after
        120_000 -> flunk("a reply was lost")
      end
    end
  end

  defp outcome({:ok, %{"slept_ms" => _}}), do: :ok
  defp outcome({:error, %Error{code: code}}), do: code

  defp assert_ping(pid) do
    assert Sidecar.call(pid, "ping", %{}, timeout: 30_000) == {:ok, %{"pong" => true}}
  end

  ## Concurrent writers

  describe "concurrent writers" do
    @tag timeout: 180_000
    test "disjoint regions that share chunks, 32 processes, one sidecar: exact content" do
      pid = start_sidecar(workers: 2)
      dir = tmp_dir("disjoint")
      create!(pid, dir, [64, 64], [16, 16])

      # 32 bands of 2 rows: each band is half of a chunk row
      Task.async_stream(
        0..31,
        fn b ->
          data = :binary.copy(<<b::little-32>>, 2 * 64)
          write_box!(pid, dir, [2 * b, 0], [2, 64], data)
        end,
        max_concurrency: 32,
        timeout: 60_000
      )
      |> Stream.run()

      expected = for b <- 0..31, do: :binary.copy(<<b::little-32>>, 2 * 64)
      assert read_box!(pid, dir) == IO.iodata_to_binary(expected)
    end

    @tag timeout: 180_000
    test "chunk-aligned disjoint regions through two sidecars: exact content" do
      a = start_sidecar(workers: 1)
      b = start_sidecar(workers: 1)
      dir = tmp_dir("two-sidecars")
      create!(a, dir, [64, 64], [16, 16])

      # 16 boxes of one chunk each, one process per box, alternating between
      # the sidecars; each process writes its box three times in turn
      Task.async_stream(
        0..15,
        fn box ->
          {r, c} = {div(box, 4) * 16, rem(box, 4) * 16}

          for round <- 1..3 do
            sidecar = if rem(box + round, 2) == 0, do: a, else: b
            data = :binary.copy(<<round * 100 + box::little-32>>, 256)
            write_box!(sidecar, dir, [r, c], [16, 16], data)
          end
        end,
        max_concurrency: 16,
        timeout: 60_000
      )
      |> Stream.run()

      expected =
        for row <- 0..63, col <- 0..63, into: <<>> do
          <<300 + div(row, 16) * 4 + div(col, 16)::little-32>>
        end

      assert read_box!(a, dir) == expected
      assert read_box!(b, dir) == expected
    end

    @tag timeout: 180_000
    test "overlapping partial-chunk writes through one sidecar lose no update" do
      pid = start_sidecar(workers: 2)
      dir = tmp_dir("overlap")
      create!(pid, dir, [32, 32], [8, 8])

      # 1024 one-element writes from 64 processes: every chunk is
      # read-modified-written 64 times, concurrently
      Task.async_stream(
        0..63,
        fn p ->
          for cell <- p..1023//64 do
            write_box!(pid, dir, [div(cell, 32), rem(cell, 32)], [1, 1], <<cell::little-32>>)
          end
        end,
        max_concurrency: 64,
        timeout: 120_000
      )
      |> Stream.run()

      expected = for cell <- 0..1023, into: <<>>, do: <<cell::little-32>>
      assert read_box!(pid, dir) == expected
    end
  end

  defp create!(pid, dir, shape, chunks) do
    params = %{
      "store" => fs(dir),
      "path" => "a",
      "shape" => shape,
      "chunks" => chunks,
      "dtype" => "int32",
      "compressor" => %{"id" => "zlib", "level" => 1},
      "fill_value" => -1
    }

    {:ok, _} = Sidecar.call(pid, "array.create", params, timeout: 60_000)
  end

  defp write_box!(pid, dir, start, shape, data) do
    params = %{
      "store" => fs(dir),
      "path" => "a",
      "start" => start,
      "shape" => shape,
      "data" => {:bin, data}
    }

    {:ok, _} = Sidecar.call(pid, "array.write", params, timeout: 60_000)
  end

  defp read_box!(pid, dir) do
    {:ok, %{"data" => {:bin, data}}} = read_all(pid, dir)
    data
  end

  ## Limits given as options

  describe "limits given as options" do
    test ":max_request_bytes and :max_in_flight reach the sidecar" do
      pid = start_sidecar(max_request_bytes: 3 * @mib, max_in_flight: 77)
      {:ok, hello} = Sidecar.info(pid)
      assert hello["limits"]["max_request_bytes"] == 3 * @mib
      assert hello["limits"]["max_in_flight"] == 77
      cmdline = File.read!("/proc/#{Sidecar.os_pid!(pid)}/cmdline") |> String.split(<<0>>)

      assert ["--max-request-bytes", "3145728", "--max-in-flight", "77"] --
               cmdline == []

      assert_raise ArgumentError, ~r/:max_request_bytes/, fn ->
        Sidecar.start_link(max_request_bytes: 0)
      end

      assert_raise ArgumentError, ~r/:max_in_flight/, fn ->
        Sidecar.start_link(max_in_flight: -1)
      end
    end

    test "an upload over :max_request_bytes is refused before a byte is sent" do
      pid = start_sidecar(max_request_bytes: @mib)

      sent =
        count_port_commands(fn ->
          assert {:error, %Error{code: :too_large, details: %{bytes: bytes, limit: limit}}} =
                   Sidecar.call(pid, "echo", %{}, upload: :binary.copy(<<0>>, @mib + 1))

          assert {bytes, limit} == {@mib + 1, @mib}
        end)

      assert sent == 0

      assert {:ok, %{"data" => {:bin, data}}} =
               Sidecar.call(pid, "echo", %{}, upload: :binary.copy(<<1>>, @mib))

      assert data == :binary.copy(<<1>>, @mib)
    end

    test "an upload the sidecar refuses up front stops early" do
      pid = start_sidecar()
      dir = tmp_dir("early")
      create!(pid, dir, [64, 64], [16, 16])
      data = :binary.copy(<<0>>, 64 * @mib)

      sent =
        count_port_commands(fn ->
          # 64 MiB for a box of 16 KiB: data_size_mismatch before any byte is read
          assert {:error, %Error{code: :data_size_mismatch}} =
                   Sidecar.call(
                     pid,
                     "array.write",
                     %{"store" => fs(dir), "path" => "a", "shape" => [64, 64]},
                     upload: data
                   )
        end)

      # 256 pieces of 256 KiB would be sent without the early stop
      assert sent < 128, "#{sent} pieces sent"
      assert_ping(pid)
    end
  end

  # How many Port.command calls this process made while running fun.
  defp count_port_commands(fun) do
    me = self()
    counter = spawn_link(fn -> count_loop(0) end)
    :erlang.trace_pattern({:erlang, :port_command, :_}, true, [])
    :erlang.trace(me, true, [:call, {:tracer, counter}])

    try do
      fun.()
    after
      :erlang.trace(me, false, [:call])
      :erlang.trace_pattern({:erlang, :port_command, :_}, false, [])
    end

    :erlang.trace_delivered(:all)

    receive do
      {:trace_delivered, :all, _} -> :ok
    end

    send(counter, {:count, me})

    receive do
      {:count, n} -> n
    end
  end

  defp count_loop(n) do
    receive do
      {:count, from} -> send(from, {:count, n})
      {:trace, _, :call, _} -> count_loop(n + 1)
    end
  end
end
