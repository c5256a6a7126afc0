defmodule ZarrBridge.SoakTest do
  # The soak (issue 6): mixed reads, writes and codec calls from many
  # processes for a long time, with the sidecar SIGKILLed at a random moment
  # of every period. Afterwards the array matches, exactly, the model each
  # process kept of its own region, and the sidecar's memory has not grown.
  #
  # Tagged :soak, so `make test` skips it. Run it with
  #
  #     cd elixir_client && mix test --only soak
  #
  # and tune it with the environment:
  #
  #   ZB_SOAK_SECONDS     how long the traffic runs (default 600)
  #   ZB_SOAK_PROCS       concurrent client processes (default 50)
  #   ZB_SOAK_KILL_EVERY  seconds between SIGKILLs of the sidecar (default 30)
  #
  # Each process owns 8 rows of a 256-column int32 array whose chunks are
  # 16 x 64, so every chunk is shared by two processes and every write is a
  # concurrent read-modify-write of shared chunks. A call that fails because
  # the sidecar died (or is restarting) is retried until it succeeds, as a
  # client would; every read is compared with the model at once. A second,
  # 32 MiB array is read whole now and then (streamed, killed mid-stream
  # sometimes) and compared with its known content.
  use ZarrBridge.Test.SidecarCase, async: false

  import Bitwise

  @moduletag :soak
  @moduletag timeout: :infinity

  @rows 8
  @cols 256
  @chunks [16, 64]
  @retriable [:sidecar_exited, :sidecar_unavailable]
  @codecs [
    %{"id" => "zstd", "level" => 1},
    %{"id" => "zlib", "level" => 1},
    %{"id" => "lz4"},
    %{"id" => "blosc", "cname" => "lz4", "clevel" => 3, "shuffle" => 1}
  ]
  @big_rows 2048
  @big_cols 2048

  defp env_int(name, default) do
    case Integer.parse(System.get_env(name, "")) do
      {n, ""} when n > 0 -> n
      _ -> default
    end
  end

  test "mixed traffic from many processes while the sidecar is killed at random" do
    seconds = env_int("ZB_SOAK_SECONDS", 600)
    procs = env_int("ZB_SOAK_PROCS", 50)
    kill_every = env_int("ZB_SOAK_KILL_EVERY", 30)

    dir = Path.join(System.tmp_dir!(), "zb-soak-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf!(dir) end)

    pid = start_sidecar(workers: 2)
    store = %{"kind" => "filesystem", "path" => dir}
    setup_arrays!(pid, store, procs)

    t0 = now()
    deadline = t0 + seconds * 1000
    parent = self()

    sampler = spawn_link(fn -> sample_rss(pid, t0, []) end)
    killer = spawn_link(fn -> kill_loop(pid, t0, deadline, kill_every, []) end)

    clients =
      for p <- 0..(procs - 1) do
        spawn_link(fn ->
          :rand.seed(:exsss, {p, 17, ExUnit.configuration()[:seed]})
          initial = :binary.copy(<<-1::little-signed-32>>, @rows * @cols)
          state = %{pid: pid, store: store, p: p, model: initial, ops: %{}, retries: 0}
          send(parent, {:client_done, p, client_loop(state, deadline)})
        end)
      end

    results =
      for _ <- clients do
        receive do
          {:client_done, p, state} -> {p, state}
        after
          seconds * 1000 + 600_000 -> flunk("a client never finished")
        end
      end

    send(killer, {:stop, self()})

    kills =
      receive do
        {:kills, kills} -> kills
      end

    send(sampler, {:stop, self()})

    samples =
      receive do
        {:samples, samples} -> samples
      end

    # The final check: the array is exactly every process's model, in order.
    assert_ready(pid)
    models = results |> Enum.sort() |> Enum.map(fn {_p, s} -> s.model end)
    {:ok, %{"data" => {:bin, data}}} = call(pid, "array.read", %{"store" => store, "path" => "a"})
    assert data == IO.iodata_to_binary(models), "the array differs from the model"
    check_big!(pid, store)

    ops =
      Enum.reduce(results, %{}, fn {_p, s}, acc ->
        Map.merge(acc, s.ops, fn _, a, b -> a + b end)
      end)

    retries = Enum.sum(for {_p, s} <- results, do: s.retries)
    rss = rss_report(samples, 3)
    anon = rss_report(samples, 4)

    IO.puts("""

    [soak] #{seconds} s, #{procs} processes, sidecar SIGKILLed #{length(kills)} times \
    (every #{kill_every} s, at a random moment)
    [soak] operations: #{inspect(ops)}; calls retried after a kill: #{retries}
    [soak] final content: #{byte_size(data)} bytes, equal to the model
    [soak] sidecar VmRSS, median per incarnation (MiB): #{rss.text}; \
    first -> last #{rss.growth_pct}%, largest growth inside one #{rss.within_pct}%
    [soak] sidecar RssAnon, median per incarnation (MiB): #{anon.text}; \
    first -> last #{anon.growth_pct}%, largest growth inside one #{anon.within_pct}%
    """)

    assert length(kills) >= 1 or seconds < kill_every + 20
    # VmRSS counts the shared-memory band buffers and handoff segments mapped
    # at the moment of the sample (tens of MiB that come and go, bounded by
    # design); RssAnon is the sidecar's own heap, where a leak would show.
    assert rss.growth_pct <= 10.0, "the sidecar's RSS grew by #{rss.growth_pct}%"
    assert anon.growth_pct <= 10.0, "the sidecar's heap grew by #{anon.growth_pct}%"
    assert anon.within_pct <= 10.0, "an incarnation's heap grew by #{anon.within_pct}%"
  end

  ## Set-up

  defp setup_arrays!(pid, store, procs) do
    {:ok, _} =
      call(pid, "array.create", %{
        "store" => store,
        "path" => "a",
        "shape" => [procs * @rows, @cols],
        "chunks" => @chunks,
        "dtype" => "int32",
        "fill_value" => -1,
        "compressor" => %{"id" => "zlib", "level" => 1}
      })

    {:ok, _} =
      call(pid, "array.create", %{
        "store" => store,
        "path" => "big",
        "shape" => [@big_rows, @big_cols],
        "chunks" => [256, 512],
        "dtype" => "float64",
        "compressor" => %{"id" => "zstd", "level" => 1}
      })

    {:ok, _} =
      call(
        pid,
        "array.write",
        %{"store" => store, "path" => "big", "shape" => [@big_rows, @big_cols]},
        upload: big_content()
      )
  end

  defp big_content do
    for r <- 0..(@big_rows - 1), do: :binary.copy(<<r * 1.0::little-float-64>>, @big_cols)
  end

  defp check_big!(pid, store) do
    {:ok, %{"data" => {:bin, data}}} =
      call(pid, "array.read", %{"store" => store, "path" => "big"})

    unless data == IO.iodata_to_binary(big_content()),
      do: flunk("the 32 MiB array read back wrong")
  end

  ## The clients

  defp client_loop(state, deadline) do
    if now() >= deadline do
      state
    else
      op =
        case :rand.uniform(100) do
          n when n <= 35 -> :write
          n when n <= 70 -> :read
          n when n <= 92 -> :codec
          n when n <= 96 -> :write_upload
          _ -> :big_read
        end

      state = run(op, state)
      client_loop(%{state | ops: Map.update(state.ops, op, 1, &(&1 + 1))}, deadline)
    end
  end

  # A random box inside the process's own rows: {row0, col0, rows, cols}.
  defp box do
    r0 = :rand.uniform(@rows) - 1
    c0 = :rand.uniform(@cols) - 1
    {r0, c0, :rand.uniform(@rows - r0), :rand.uniform(@cols - c0)}
  end

  defp run(write, state) when write in [:write, :write_upload] do
    {r0, c0, nr, nc} = box()
    values = for _ <- 1..(nr * nc), into: <<>>, do: <<:rand.uniform(1 <<< 30)::little-32>>

    params = %{
      "store" => state.store,
      "path" => "a",
      "start" => [state.p * @rows + r0, c0],
      "shape" => [nr, nc]
    }

    {params, opts} =
      if write == :write,
        do: {Map.put(params, "data", {:bin, values}), []},
        else: {params, [upload: values]}

    {{:ok, _}, state} = retrying(state, fn -> call(state.pid, "array.write", params, opts) end)
    %{state | model: put_box(state.model, r0, c0, nr, nc, values)}
  end

  defp run(:read, state) do
    {r0, c0, nr, nc} = box()

    params = %{
      "store" => state.store,
      "path" => "a",
      "start" => [state.p * @rows + r0, c0],
      "stop" => [state.p * @rows + r0 + nr, c0 + nc]
    }

    {{:ok, %{"data" => {:bin, got}}}, state} =
      retrying(state, fn -> call(state.pid, "array.read", params) end)

    expected = get_box(state.model, r0, c0, nr, nc)

    unless got == expected do
      flunk("process #{state.p} read box #{inspect({r0, c0, nr, nc})} different from its model")
    end

    state
  end

  defp run(:codec, state) do
    codec = Enum.random(@codecs)
    data = :rand.bytes(Enum.random([100, 4_000, 70_000, 300_000]))
    data = if :rand.uniform(2) == 1, do: data, else: :binary.copy(binary_part(data, 0, 50), 2000)

    {{:ok, %{"data" => {:bin, encoded}}}, state} =
      retrying(state, fn ->
        call(state.pid, "codec.encode", %{"codec" => codec, "data" => {:bin, data}})
      end)

    {{:ok, %{"data" => {:bin, decoded}}}, state} =
      retrying(state, fn ->
        call(state.pid, "codec.decode", %{"codec" => codec}, upload: encoded)
      end)

    unless decoded == data, do: flunk("#{inspect(codec)} did not round-trip")
    state
  end

  defp run(:big_read, state) do
    {{:ok, %{"data" => {:bin, data}}}, state} =
      retrying(state, fn ->
        call(state.pid, "array.read", %{
          "store" => state.store,
          "path" => "big",
          "handoff" => :rand.uniform(2) == 1
        })
      end)

    unless byte_size(data) == @big_rows * @big_cols * 8 and
             binary_part(data, byte_size(data) - 8, 8) ==
               <<(@big_rows - 1) * 1.0::little-float-64>> do
      flunk("the 32 MiB array read back wrong")
    end

    state
  end

  # Retries a call that failed because the sidecar died or is restarting.
  defp retrying(state, fun) do
    case fun.() do
      {:error, %Error{code: code}} when code in @retriable ->
        Process.sleep(50)
        retrying(%{state | retries: state.retries + 1}, fun)

      {:ok, _} = ok ->
        {ok, state}

      {:error, error} ->
        flunk("process #{state.p}: #{Exception.message(error)}")
    end
  end

  defp call(pid, method, params, opts \\ []),
    do: Sidecar.call(pid, method, params, Keyword.put_new(opts, :timeout, 120_000))

  defp put_box(model, r0, c0, nr, nc, values) do
    Enum.reduce(0..(nr - 1), model, fn r, acc ->
      offset = ((r0 + r) * @cols + c0) * 4
      row = binary_part(values, r * nc * 4, nc * 4)
      <<head::binary-size(offset), _::binary-size(nc * 4), tail::binary>> = acc
      <<head::binary, row::binary, tail::binary>>
    end)
  end

  defp get_box(model, r0, c0, nr, nc) do
    for r <- 0..(nr - 1), into: <<>>, do: binary_part(model, ((r0 + r) * @cols + c0) * 4, nc * 4)
  end

  ## The killer and the RSS sampler

  defp kill_loop(pid, t0, deadline, every, kills) do
    # one SIGKILL at a random moment of each period (not in the last 20 s,
    # so that the final incarnation lives long enough to be measured)
    period_start = t0 + length(kills) * every * 1000
    at = period_start + :rand.uniform(every * 1000)

    cond do
      at > deadline - 20_000 ->
        receive do
          {:stop, from} -> send(from, {:kills, Enum.reverse(kills)})
        end

      true ->
        wait = max(at - now(), 0)

        receive do
          {:stop, from} -> send(from, {:kills, Enum.reverse(kills)})
        after
          wait ->
            kills =
              case Sidecar.os_pid!(pid) do
                nil ->
                  kills

                os_pid ->
                  System.cmd("kill", ["-KILL", Integer.to_string(os_pid)])
                  [{now() - t0, os_pid} | kills]
              end

            kill_loop(pid, t0, deadline, every, kills)
        end
    end
  end

  defp sample_rss(pid, t0, acc) do
    receive do
      {:stop, from} -> send(from, {:samples, Enum.reverse(acc)})
    after
      1_000 ->
        acc =
          with os_pid when is_integer(os_pid) <- Sidecar.os_pid!(pid),
               {:ok, status} <- File.read("/proc/#{os_pid}/status"),
               [_, rss] <- Regex.run(~r/VmRSS:\s+(\d+) kB/, status),
               [_, anon] <- Regex.run(~r/RssAnon:\s+(\d+) kB/, status) do
            t = now() - t0
            started = incarnation_start(acc, os_pid, t)
            [{os_pid, started, t, String.to_integer(rss), String.to_integer(anon)} | acc]
          else
            _ -> acc
          end

        sample_rss(pid, t0, acc)
    end
  end

  defp incarnation_start([{os_pid, started, _, _, _} | _], os_pid, _now), do: started
  defp incarnation_start(_acc, _os_pid, now), do: now

  # Per incarnation, the samples taken after 10 s of life (warm-up: the
  # imports, the pool, the first band buffers). Growth is measured between
  # medians, so that one sample taken while a 32 MiB buffer is mapped does
  # not count: from the first incarnation to the last, and inside each
  # incarnation from the first third of its samples to the last third.
  # `field` is 3 for VmRSS (all resident pages, shared memory included) and
  # 4 for RssAnon (the process's private memory, where a leak would show).
  defp rss_report(samples, field) do
    incarnations =
      samples
      |> Enum.chunk_by(&elem(&1, 0))
      |> Enum.map(fn list ->
        for s <- list, elem(s, 2) - elem(s, 1) >= 10_000, do: elem(s, field)
      end)
      |> Enum.filter(&(length(&1) >= 6))

    if incarnations == [] do
      %{text: "too few samples", baseline: 0, last: 0, growth_pct: 0.0, within_pct: 0.0}
    else
      medians = Enum.map(incarnations, &median/1)

      within =
        for warm <- incarnations do
          third = div(length(warm), 3)
          pct(median(Enum.take(warm, third)), median(Enum.take(warm, -third)))
        end

      %{
        text: Enum.map_join(medians, ", ", &mib/1),
        baseline: mib(hd(medians)),
        last: mib(List.last(medians)),
        growth_pct: pct(hd(medians), List.last(medians)),
        within_pct: Enum.max(within)
      }
    end
  end

  defp median(list), do: list |> Enum.sort() |> Enum.at(div(length(list), 2))
  defp pct(from, to), do: Float.round((to - from) * 100 / from, 1)
  defp mib(kib), do: Float.round(kib / 1024, 1)

  defp now, do: System.monotonic_time(:millisecond)

  defp assert_ready(pid) do
    assert eventually(fn -> match?({:ok, _}, Sidecar.info(pid)) end, 60_000)
  end
end
