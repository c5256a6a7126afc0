# The Elixir half of ZarrBridge's benchmark. Run by `python -m bench`:
#
#     cd elixir_client && mix run --no-start ../bench/elixir/bench.exs JOBS_FILE
#
# JOBS_FILE has one job per line: the job's kind, then `key=value` fields,
# separated by tabs. Every measurement is printed as one line
# `BENCH {json}` on stdout; anything else on stdout or stderr is a log.
# Each job starts its own ZarrBridge.Sidecar with the options it needs, so
# the memory high-water marks it reports belong to that job alone.
#
# Every timed result is hashed (SHA-256) outside the timed region, and the
# hash is printed with the time, so the Python driver can check it against
# the in-process read.

defmodule Bench.Json do
  @moduledoc false
  # Just enough JSON for flat measurement records (Elixir 1.14 has none).

  def encode(nil), do: "null"
  def encode(true), do: "true"
  def encode(false), do: "false"
  def encode(n) when is_integer(n), do: Integer.to_string(n)
  def encode(x) when is_float(x), do: :erlang.float_to_binary(x, [:short])
  def encode(a) when is_atom(a), do: encode(Atom.to_string(a))

  def encode(s) when is_binary(s) do
    escaped =
      for <<c::utf8 <- s>>, into: "" do
        case c do
          ?" -> "\\\""
          ?\\ -> "\\\\"
          c when c < 0x20 -> "\\u" <> String.pad_leading(Integer.to_string(c, 16), 4, "0")
          c -> <<c::utf8>>
        end
      end

    "\"" <> escaped <> "\""
  end

  def encode(list) when is_list(list), do: "[" <> Enum.map_join(list, ",", &encode/1) <> "]"

  def encode(map) when is_map(map) do
    "{" <>
      Enum.map_join(map, ",", fn {k, v} -> encode(to_string(k)) <> ":" <> encode(v) end) <> "}"
  end
end

defmodule Bench.Proc do
  @moduledoc false
  # Memory high-water marks from /proc (Linux).

  @doc "VmHWM of an OS process in KiB, or nil when it is gone."
  def hwm_kib(os_pid) do
    case File.read("/proc/#{os_pid}/status") do
      {:ok, text} ->
        case Regex.run(~r/^VmHWM:\s+(\d+) kB/m, text) do
          [_, kib] -> String.to_integer(kib)
          nil -> nil
        end

      {:error, _} ->
        nil
    end
  end

  @doc "All descendants of an OS process (children of any of its threads, recursively)."
  def descendants(os_pid) do
    kids =
      Path.wildcard("/proc/#{os_pid}/task/*/children")
      |> Enum.flat_map(fn path ->
        case File.read(path) do
          {:ok, text} -> text |> String.split() |> Enum.map(&String.to_integer/1)
          {:error, _} -> []
        end
      end)

    kids ++ Enum.flat_map(kids, &descendants/1)
  end

  def cmdline(os_pid) do
    case File.read("/proc/#{os_pid}/cmdline") do
      {:ok, text} ->
        text |> String.split(<<0>>, trim: true) |> Enum.join(" ") |> String.slice(0, 160)

      {:error, _} ->
        ""
    end
  end

  @doc "Current PSS in KiB (shared pages split between their users), or 0 when gone."
  def pss_kib(os_pid) do
    case File.read("/proc/#{os_pid}/smaps_rollup") do
      {:ok, text} ->
        case Regex.run(~r/^Pss:\s+(\d+) kB/m, text) do
          [_, kib] -> String.to_integer(kib)
          nil -> 0
        end

      {:error, _} ->
        0
    end
  end

  @doc """
  Runs `fun` while sampling the summed PSS of `os_pids` every `every_ms`;
  returns `{result, peak_kib, samples}`.
  """
  def with_pss_sampler(os_pids, every_ms, fun) do
    parent = self()
    peaks = %{pss: 0, main_anon: 0, main_shmem: 0}
    sampler = spawn_link(fn -> sample_loop(parent, os_pids, every_ms, peaks, 0) end)
    result = fun.()
    send(sampler, {:stop, self()})

    receive do
      {:peak, ^sampler, peaks, samples} -> {result, peaks, samples}
    end
  end

  # The first pid is the sidecar's main process: its anonymous and shared-memory
  # RSS are tracked apart, to tell its own buffers from mapped segments.
  defp sample_loop(parent, [main | _] = os_pids, every_ms, peaks, samples) do
    total = os_pids |> Enum.map(&pss_kib/1) |> Enum.sum()
    {anon, shmem} = rss_parts_kib(main)

    peaks = %{
      pss: max(peaks.pss, total),
      main_anon: max(peaks.main_anon, anon),
      main_shmem: max(peaks.main_shmem, shmem)
    }

    receive do
      {:stop, ^parent} -> send(parent, {:peak, self(), peaks, samples + 1})
    after
      every_ms -> sample_loop(parent, os_pids, every_ms, peaks, samples + 1)
    end
  end

  defp rss_parts_kib(os_pid) do
    case File.read("/proc/#{os_pid}/status") do
      {:ok, text} ->
        field = fn name ->
          case Regex.run(~r/^#{name}:\s+(\d+) kB/m, text) do
            [_, kib] -> String.to_integer(kib)
            nil -> 0
          end
        end

        {field.("RssAnon"), field.("RssShmem")}

      {:error, _} ->
        {0, 0}
    end
  end

  @doc "The peak RSS of the sidecar, each of its descendants and this BEAM."
  def report(sidecar) do
    os_pid = ZarrBridge.Sidecar.os_pid!(sidecar)

    %{
      sidecar_hwm_kib: hwm_kib(os_pid),
      children:
        for pid <- descendants(os_pid) do
          %{pid: pid, hwm_kib: hwm_kib(pid), cmdline: cmdline(pid)}
        end,
      beam_hwm_kib: hwm_kib(System.pid())
    }
  end
end

defmodule Bench.Cpu do
  @moduledoc false
  # CPU time (user + system) of OS processes from /proc/<pid>/stat, to say where
  # a timed run's time went: the BEAM, the sidecar's main process, its workers.

  @doc "The processes to watch: this BEAM, the sidecar and its descendants, labelled."
  def watch(sidecar_os_pid) do
    children =
      for pid <- Bench.Proc.descendants(sidecar_os_pid) do
        cmd = Bench.Proc.cmdline(pid)

        label =
          cond do
            cmd =~ "resource_tracker" -> "resource tracker"
            ppid(pid) == sidecar_os_pid -> "fork server"
            true -> "worker"
          end

        {pid, label}
      end

    [{System.pid() |> String.to_integer(), "BEAM"}, {sidecar_os_pid, "sidecar"} | children]
  end

  def snapshot(watched), do: Map.new(watched, fn {pid, _} -> {pid, ticks(pid)} end)

  @doc "Adds the ticks spent between two snapshots to `acc`."
  def add(acc, before, later) do
    Enum.reduce(later, acc, fn {pid, t}, acc ->
      Map.update(acc, pid, t - Map.get(before, pid, t), &(&1 + t - Map.get(before, pid, t)))
    end)
  end

  @doc "Per-run milliseconds per process: [%{pid, label, ms}]."
  def per_run(acc, watched, runs) do
    hz = clock_ticks()

    for {pid, label} <- watched do
      %{pid: pid, label: label, ms: Map.get(acc, pid, 0) * 1000 / hz / runs}
    end
  end

  # The fields after the command name, which may itself hold ") ".
  defp stat_fields(pid) do
    case File.read("/proc/#{pid}/stat") do
      {:ok, text} -> text |> String.split(") ") |> List.last() |> String.split()
      {:error, _} -> nil
    end
  end

  # utime + stime, fields 14 and 15 of stat(5).
  defp ticks(pid) do
    case stat_fields(pid) do
      nil -> 0
      f -> String.to_integer(Enum.at(f, 11)) + String.to_integer(Enum.at(f, 12))
    end
  end

  defp ppid(pid) do
    case stat_fields(pid) do
      nil -> nil
      f -> String.to_integer(Enum.at(f, 1))
    end
  end

  defp clock_ticks do
    case System.cmd("getconf", ["CLK_TCK"]) do
      {out, 0} -> out |> String.trim() |> String.to_integer()
      _ -> 100
    end
  end
end

defmodule Bench do
  @moduledoc false

  alias ZarrBridge.Sidecar

  def main([jobs_file]) do
    {:ok, _} = Application.ensure_all_started(:crypto)

    jobs_file
    |> File.read!()
    |> String.split("\n", trim: true)
    |> Enum.each(&run_line/1)
  end

  def main(_) do
    IO.puts(:stderr, "usage: mix run --no-start ../bench/elixir/bench.exs JOBS_FILE")
    System.halt(2)
  end

  defp run_line(line) do
    [kind | fields] = String.split(line, "\t")

    opts =
      Map.new(fields, fn field ->
        [k, v] = String.split(field, "=", parts: 2)
        {k, v}
      end)

    emit(%{job: opts["job"], event: "start", kind: kind})
    run(kind, Map.put(opts, "job_kind", kind))
    emit(%{job: opts["job"], event: "done", kind: kind})
  end

  ## Helpers

  def emit(map), do: IO.puts("BENCH " <> Bench.Json.encode(map))

  defp now, do: System.monotonic_time(:nanosecond)

  defp time(fun) do
    t0 = now()
    result = fun.()
    {now() - t0, result}
  end

  # With sync=true the driver runs one in-process baseline run while we wait here.
  defp sync(%{"sync" => "true"} = opts, run), do: wait_for_driver(%{job: opts["job"], sync: run})
  defp sync(_opts, _run), do: :ok

  # Print a record the driver acts on, and wait until it says "go".
  defp wait_for_driver(record) do
    emit(record)

    case IO.gets("") do
      "go\n" -> :ok
      other -> raise "the driver answered #{inspect(other)} instead of go"
    end
  end

  defp int(opts, key), do: opts |> Map.fetch!(key) |> String.to_integer()

  # shape=4096x8192 -> {4096, 8192}
  defp shape(opts) do
    opts
    |> Map.fetch!("shape")
    |> String.split("x")
    |> Enum.map(&String.to_integer/1)
    |> List.to_tuple()
  end

  defp sha256(data) when is_binary(data),
    do: :crypto.hash(:sha256, data) |> Base.encode16(case: :lower)

  defp sha256(list) when is_list(list) do
    list
    |> Enum.reduce(:crypto.hash_init(:sha256), &:crypto.hash_update(&2, &1))
    |> :crypto.hash_final()
    |> Base.encode16(case: :lower)
  end

  # A sidecar of our own, ready (its hello answered) when this returns.
  defp start_sidecar(opts) do
    roots = opts |> Map.get("roots", "") |> String.split(",", trim: true)

    {:ok, sidecar} =
      Sidecar.start_link(
        python: Map.fetch!(opts, "python"),
        workers: int(opts, "workers"),
        allowed_roots: roots,
        call_timeout: 600_000
      )

    {:ok, hello} = Sidecar.info(sidecar, 120_000)

    # With profile=true the driver attaches py-spy to the sidecar before we go on
    # (not in the start job, which times the start itself).
    if opts["profile"] == "true" and opts["job_kind"] != "start",
      do: wait_for_driver(%{job: opts["job"], attach: Sidecar.os_pid!(sidecar)})

    {sidecar, hello}
  end

  defp sidecar_port(sidecar) do
    os_pid = Sidecar.os_pid!(sidecar)

    Enum.find(Port.list(), fn port -> Port.info(port, :os_pid) == {:os_pid, os_pid} end) ||
      raise "no port for the sidecar #{os_pid}"
  end

  defp stop_sidecar(sidecar) do
    Process.unlink(sidecar)
    ref = Process.monitor(sidecar)
    GenServer.stop(sidecar)

    receive do
      {:DOWN, ^ref, _, _, _} -> :ok
    end
  end

  defp percentile(sorted, q) do
    n = tuple_size(sorted)
    pos = (n - 1) * q / 100
    lo = floor(pos)
    hi = ceil(pos)
    a = elem(sorted, lo)
    b = elem(sorted, hi)
    a + (b - a) * (pos - lo)
  end

  defp latencies(calls, fun) do
    sorted =
      for(_ <- 1..calls, do: elem(time(fun), 0))
      |> Enum.sort()
      |> List.to_tuple()

    %{p50_us: percentile(sorted, 50) / 1000, p99_us: percentile(sorted, 99) / 1000}
  end

  ## Jobs

  # Row 1: ping through Sidecar.call against a raw {packet, 4} echo, alternating.
  def run("latency", opts) do
    {sidecar, _hello} = start_sidecar(opts)
    python = Map.fetch!(opts, "python")
    port_opts = [:binary, {:packet, 4}, :nouse_stdio, :exit_status]

    # The floor: a Python echo on the same kind of Port.
    echo_port = Port.open({:spawn_executable, python}, [{:args, [opts["echo"]]} | port_opts])
    # The same ping frame as Sidecar.call sends, on a raw Port to a second sidecar
    # (the one Sidecar.call uses is owned by its connection process): the sidecar's share.
    raw_port =
      Port.open(
        {:spawn_executable, python},
        [{:args, ["-m", "pybridge", "--workers", "1"]} | port_opts]
      )

    roundtrip = fn port, frame ->
      true = Port.command(port, frame)

      receive do
        {^port, {:data, reply}} -> reply
      after
        30_000 -> raise "a raw port did not answer"
      end
    end

    ping_frame = IO.iodata_to_binary(ZarrBridge.Msgpack.encode!([0, 1, "ping", %{}]))

    {:ok, [1, 1, nil, %{"pong" => true}]} =
      ZarrBridge.Msgpack.decode(roundtrip.(raw_port, ping_frame))

    # The size of that frame, as the echo's payload.
    payload = :binary.copy(<<0x5A>>, byte_size(ping_frame))

    echo = fn -> ^payload = roundtrip.(echo_port, payload) end
    raw = fn -> roundtrip.(raw_port, ping_frame) end
    ping = fn -> {:ok, %{"pong" => true}} = Sidecar.call(sidecar, "ping", %{}) end
    calls = int(opts, "calls")
    for f <- [echo, raw, ping], do: latencies(div(calls, 4) + 1, f)

    for r <- 1..int(opts, "runs") do
      e = latencies(calls, echo)
      w = latencies(calls, raw)
      p = latencies(calls, ping)

      emit(%{
        job: opts["job"],
        run: r,
        calls: calls,
        frame_bytes: byte_size(ping_frame),
        echo_p50_us: e.p50_us,
        echo_p99_us: e.p99_us,
        raw_p50_us: w.p50_us,
        raw_p99_us: w.p99_us,
        ping_p50_us: p.p50_us,
        ping_p99_us: p.p99_us
      })
    end

    Port.close(echo_port)
    Port.close(raw_port)
    stop_sidecar(sidecar)
  end

  # Rows 2-4 and 8: full reads of an array.
  def run("read", opts) do
    {sidecar, _hello} = start_sidecar(opts)
    beam_before = Bench.Proc.hwm_kib(System.pid())
    path = Map.fetch!(opts, "path")
    {:ok, array} = ZarrBridge.open(storage: :filesystem, path: path, mode: :r, server: sidecar)

    # handoff=true|false is passed on; handoff=default leaves the option out.
    read_opts =
      case Map.fetch!(opts, "handoff") do
        "default" -> []
        flag -> [handoff: flag == "true"]
      end

    read = fn ->
      {:ok, %ZarrBridge.NDArray{data: data}} = ZarrBridge.Array.read(array, read_opts)
      data
    end

    # The bytes the sidecar's port delivered: tells a handoff from a pipe stream.
    port = sidecar_port(sidecar)
    port_in = fn -> elem(Port.info(port, :input), 1) end

    warm = read.()
    emit(%{job: opts["job"], warmup: true, sha256: sha256(warm), bytes: byte_size(warm)})
    warm = nil
    _ = warm

    watched = Bench.Cpu.watch(Sidecar.os_pid!(sidecar))
    runs = int(opts, "runs")

    cpu =
      Enum.reduce(1..runs, %{}, fn r, cpu ->
        sync(opts, r)
        :erlang.garbage_collect()
        binary_before = :erlang.memory(:binary)
        in0 = port_in.()
        before = Bench.Cpu.snapshot(watched)
        {ns, data} = time(read)
        cpu = Bench.Cpu.add(cpu, before, Bench.Cpu.snapshot(watched))
        piped = port_in.() - in0

        emit(%{
          job: opts["job"],
          run: r,
          seconds: ns / 1.0e9,
          sha256: sha256(data),
          bytes: byte_size(data),
          pipe_bytes: piped,
          beam_binary_before: binary_before
        })

        cpu
      end)

    emit(%{job: opts["job"], cpu: Bench.Cpu.per_run(cpu, watched, runs)})

    # One more read, untimed, while the sidecar tree's PSS is sampled.
    :erlang.garbage_collect()
    os_pid = Sidecar.os_pid!(sidecar)
    tree = [os_pid | Bench.Proc.descendants(os_pid)]
    {data, peaks, samples} = Bench.Proc.with_pss_sampler(tree, 5, read)
    true = byte_size(data) > 0
    data = nil
    _ = data
    :erlang.garbage_collect()

    report =
      Map.merge(Bench.Proc.report(sidecar), %{
        tree_peak_pss_kib: peaks.pss,
        main_peak_anon_kib: peaks.main_anon,
        main_peak_shmem_kib: peaks.main_shmem,
        pss_samples: samples,
        beam_hwm_before_kib: beam_before
      })

    emit(Map.merge(%{job: opts["job"], rss: true}, report))
    stop_sidecar(sidecar)
  end

  # Row 5: full writes into arrays the driver created empty (the first is a warm-up).
  def run("write", opts) do
    {sidecar, _hello} = start_sidecar(opts)
    data = File.read!(Map.fetch!(opts, "raw"))
    nd = ZarrBridge.NDArray.new!(data, shape(opts), :float64)
    zeros = List.duplicate(0, tuple_size(nd.shape)) |> List.to_tuple()
    [warmup | targets] = opts |> Map.fetch!("targets") |> String.split(",")

    # handoff=true|false is passed on; handoff=default leaves the option out.
    write_opts =
      case Map.get(opts, "handoff", "default") do
        "default" -> []
        flag -> [handoff: flag == "true"]
      end

    write = fn target ->
      {:ok, array} =
        ZarrBridge.open(storage: :filesystem, path: target, mode: :"r+", server: sidecar)

      :erlang.garbage_collect()
      {ns, :ok} = time(fn -> ZarrBridge.Array.write(array, nd, [start: zeros] ++ write_opts) end)
      ns
    end

    # The bytes written to the sidecar's port: tells a handoff from a pipe upload.
    port = sidecar_port(sidecar)
    port_out = fn -> elem(Port.info(port, :output), 1) end

    ns = write.(warmup)
    emit(%{job: opts["job"], run: 0, warmup: true, seconds: ns / 1.0e9, target: warmup})
    # After the warm-up, so the workers are there.
    watched = Bench.Cpu.watch(Sidecar.os_pid!(sidecar))

    cpu =
      targets
      |> Enum.with_index(1)
      |> Enum.reduce(%{}, fn {target, r}, cpu ->
        sync(opts, r)
        out0 = port_out.()
        before = Bench.Cpu.snapshot(watched)
        ns = write.(target)
        cpu = Bench.Cpu.add(cpu, before, Bench.Cpu.snapshot(watched))
        piped = port_out.() - out0
        emit(%{job: opts["job"], run: r, seconds: ns / 1.0e9, target: target, pipe_bytes: piped})
        cpu
      end)

    emit(%{job: opts["job"], cpu: Bench.Cpu.per_run(cpu, watched, length(targets))})
    emit(Map.merge(%{job: opts["job"], rss: true}, Bench.Proc.report(sidecar)))
    stop_sidecar(sidecar)
  end

  # Row 6: codec.decode_many throughput (issue 3's bench/codecs).
  def run("decode_many", opts) do
    {sidecar, hello} = start_sidecar(opts)
    items = read_items(Map.fetch!(opts, "items"))
    codec = codec_config(opts)
    batch = int(opts, "batch")
    in_flight = int(opts, "in_flight")
    handoff = Map.get(opts, "handoff", true) in [true, "true"]

    # Calls of `batch` items, up to `in_flight` of them at once, results in order.
    decode_all = fn ->
      items
      |> Enum.chunk_every(batch)
      |> Task.async_stream(
        fn group ->
          ZarrBridge.Codecs.decode_many!(codec, group, server: sidecar, handoff: handoff)
        end,
        max_concurrency: in_flight,
        timeout: :infinity
      )
      |> Enum.flat_map(fn {:ok, out} -> out end)
    end

    emit(%{
      job: opts["job"],
      warmup: true,
      sha256: sha256(decode_all.()),
      workers: hello["workers"]
    })

    watched = Bench.Cpu.watch(Sidecar.os_pid!(sidecar))
    runs = int(opts, "runs")

    cpu =
      Enum.reduce(1..runs, %{}, fn r, cpu ->
        sync(opts, r)
        :erlang.garbage_collect()
        before = Bench.Cpu.snapshot(watched)
        {ns, out} = time(decode_all)
        cpu = Bench.Cpu.add(cpu, before, Bench.Cpu.snapshot(watched))
        bytes = Enum.reduce(out, 0, &(byte_size(&1) + &2))
        emit(%{job: opts["job"], run: r, seconds: ns / 1.0e9, bytes: bytes, sha256: sha256(out)})
        cpu
      end)

    emit(%{job: opts["job"], cpu: Bench.Cpu.per_run(cpu, watched, runs)})
    stop_sidecar(sidecar)
  end

  # Row 6 (zlib only): Erlang's own :zlib in this process, one chunk after another.
  def run("erl_zlib", opts) do
    items = read_items(Map.fetch!(opts, "items"))
    decode_all = fn -> Enum.map(items, &:zlib.uncompress/1) end
    emit(%{job: opts["job"], warmup: true, sha256: sha256(decode_all.())})

    for r <- 1..int(opts, "runs") do
      :erlang.garbage_collect()
      {ns, out} = time(decode_all)
      bytes = Enum.reduce(out, 0, &(byte_size(&1) + &2))
      emit(%{job: opts["job"], run: r, seconds: ns / 1.0e9, bytes: bytes, sha256: sha256(out)})
    end
  end

  # Row 7: from start_link to the first hello reply (Sidecar.info waits for it),
  # and on to the first decode_many result, which needs the workers up.
  def run("start", opts) do
    item = :zlib.compress(:binary.copy("zarr", 1024))
    codec = %{"id" => "zlib"}

    for r <- 0..int(opts, "runs") do
      if r > 0, do: sync(opts, r)
      t0 = now()
      {sidecar, hello} = start_sidecar(opts)
      hello_ns = now() - t0
      items = List.duplicate(item, hello["workers"])
      {:ok, out} = ZarrBridge.Codecs.decode_many(codec, items, server: sidecar)
      decode_ns = now() - t0
      true = Enum.all?(out, &(&1 == :binary.copy("zarr", 1024)))

      emit(%{
        job: opts["job"],
        run: r,
        warmup: r == 0,
        seconds: hello_ns / 1.0e9,
        first_decode_seconds: decode_ns / 1.0e9,
        workers: hello["workers"]
      })

      stop_sidecar(sidecar)
    end
  end

  defp read_items(path) do
    split_items(File.read!(path), [])
  end

  defp split_items(<<>>, acc), do: Enum.reverse(acc)

  defp split_items(<<n::32-big, item::binary-size(n), rest::binary>>, acc),
    do: split_items(rest, [item | acc])

  # codec.id=zstd codec.level=3 -> %{"id" => "zstd", "level" => 3}
  defp codec_config(opts) do
    for {"codec." <> key, value} <- opts, into: %{} do
      case Integer.parse(value) do
        {n, ""} -> {key, n}
        _ -> {key, value}
      end
    end
  end
end

Bench.main(System.argv())
