defmodule ZarrBridge.Sidecar do
  @moduledoc """
  A supervised Python sidecar (`python -m pybridge`) and the process that
  talks to it.

  A `ZarrBridge.Sidecar` is a `GenServer` that owns an Erlang Port to one
  sidecar OS process. Requests and replies travel as msgpack frames
  (`protocol/PROTOCOL.md`) on the sidecar's fds 3 and 4; the sidecar's own
  stdout and stderr are inherited from the BEAM, so Python tracebacks show up
  in the console.

  The application starts one sidecar registered as `ZarrBridge.Sidecar`
  (see `ZarrBridge.Application`); start more under your own supervisor:

      children = [
        {ZarrBridge.Sidecar, name: MyApp.Sidecar, workers: 4, allowed_roots: ["/data"]}
      ]

  ## Calls

  `call/4` sends one request and waits for its reply. Many calls may be in
  flight at once, from any number of processes; replies come in completion
  order and are matched by message id, so a slow request never holds up a
  fast one.

  Each caller enforces its own deadline: it monitors the sidecar process
  with an alias and waits on it. When the deadline passes, the caller
  deactivates the alias (so a late reply is dropped by the VM and never
  reaches its mailbox), asks the sidecar to `cancel` the request, and
  returns a `:timeout` error.

  Large payloads travel as streams of frames (PROTOCOL.md section 3). A
  streamed result is joined by the caller, and a result handed over through
  shared memory (`"handoff" => true`) is read and removed by a short-lived
  process; either way it is returned as `"data" => {:bin, binary}`, as if
  the sidecar had sent it inline, and this process never waits for a large
  copy. Uploads are given with the `:upload` option of `call/4`; the caller
  itself writes their frames to the Port, or (with the `:handoff` option)
  writes them into a shared-memory file that the sidecar's workers read
  straight from, so a large upload never blocks this process either.

  ## Restarts

  When the sidecar dies, every pending caller gets a `:sidecar_exited`
  error at once, the sidecar's leftover shared-memory files are removed, and
  a new sidecar is started. The first restart is immediate (and so is any
  restart of a sidecar that lived more than 5 s); after that the delay
  starts at 100 ms and doubles up to 10 s. A sidecar that stayed up 30 s
  resets the count. While a restart is pending, calls fail at once with
  `:sidecar_unavailable`; calls made while a sidecar is starting wait for it.
  A sidecar that speaks another major protocol version is not restarted:
  every call then fails with `:protocol_mismatch`.

  The sidecar exits when its input closes, so it goes away with this
  process, and with the BEAM, however they die.

  ## The Python executable

  Found when the sidecar starts (never at compile time), from the first of:
  the `:python` option; the `ZARR_BRIDGE_PYTHON` environment variable; the
  installed environment (a release's bundle in `priv/python_env`, made by
  `ZarrBridge.Release`; else the directory `config :zarr_bridge, python_env:
  DIR` names; else the Mix project's `_build/zarr_bridge_python`; both made
  by `mix zarr_bridge.install`);
  this repository's `.venv` when the library runs from its own checkout.
  With none of them, calls fail with `:sidecar_unavailable` and a message
  that says to run `mix zarr_bridge.install`.

  The sidecar runs as `python -P -m pybridge` in the BEAM's working
  directory (relative store paths are the BEAM's), and `-P` keeps that
  directory off Python's import path.

  A configuration error (no Python environment, a Python that cannot import
  `pybridge`, a worker pool that cannot start) is logged once; the sidecar
  is still retried quietly (backing off up to 10 s), so that it comes up by
  itself once the environment is fixed.
  """

  use GenServer

  require Logger

  alias ZarrBridge.{Error, Msgpack}
  alias ZarrBridge.Sidecar.Launcher

  @protocol "1.0"
  @protocol_major "1"
  # The sidecar's exit status when its worker pool cannot start (PROTOCOL.md §1).
  @pool_failed_status 78

  @default_call_timeout 30_000
  @default_max_frame_bytes 64 * 1024 * 1024
  @default_stream_frame_bytes 256 * 1024
  # The sidecar's --handoff-threshold default, for a hello that does not say.
  @default_handoff_threshold 4 * 1024 * 1024
  @hello_timeout 30_000
  @max_id 0xFFFF_FFFF

  # Restart policy (see the moduledoc).
  @backoff_first_ms 100
  @backoff_cap_ms 10_000
  @long_lived_ms 5_000
  @stable_ms 30_000

  @option_keys [
    :name,
    :python,
    :workers,
    :env,
    :max_frame_bytes,
    :max_request_bytes,
    :max_in_flight,
    :call_timeout,
    :allowed_roots,
    :allow_pickle,
    :args
  ]

  @typedoc "A sidecar: its pid or its registered name."
  @type server :: GenServer.server()

  @typedoc "A start option (see `start_link/1`)."
  @type option ::
          {:name, GenServer.name()}
          | {:python, Path.t()}
          | {:workers, pos_integer}
          | {:env, [{String.t(), String.t() | nil}]}
          | {:max_frame_bytes, pos_integer}
          | {:max_request_bytes, pos_integer}
          | {:max_in_flight, pos_integer}
          | {:call_timeout, timeout}
          | {:allowed_roots, [Path.t()]}
          | {:allow_pickle, boolean}
          | {:args, [String.t()]}

  @typedoc "A call option (see `call/4`)."
  @type call_option ::
          {:timeout, timeout} | {:upload, iodata} | {:handoff, boolean | :auto}

  ## Public API

  @doc """
  Returns a child spec; the id is the `:name` option when given.
  """
  @spec child_spec([option]) :: Supervisor.child_spec()
  def child_spec(opts) when is_list(opts) do
    %{
      id: Keyword.get(opts, :name, __MODULE__),
      start: {__MODULE__, :start_link, [opts]},
      type: :worker,
      shutdown: 5_000
    }
  end

  @doc """
  Starts the process and, from it, the sidecar.

  Returns as soon as the process runs; the sidecar starts in the background
  and calls made meanwhile wait for it. A sidecar that cannot start does not
  make this function fail: calls return `:sidecar_unavailable` errors that
  say why, and the start is retried (see "Restarts" in the moduledoc).

  ## Options

    * `:name` - register the process under this name.
    * `:python` - the Python executable (see "The Python executable").
    * `:workers` - the size of the sidecar's worker pool
      (`--workers`; the sidecar's default is the number of CPUs).
    * `:env` - extra environment variables for the sidecar, as
      `{name, value}` string pairs; a `nil` value unsets the variable.
      `PYTHONUNBUFFERED=1` is always set.
    * `:max_frame_bytes` - the largest request frame this client sends;
      bigger requests fail with `:frame_too_large` before anything is sent.
      Defaults to the limit the sidecar reports in `hello`.
    * `:max_request_bytes` - the most bytes one request may read, write or
      upload (`--max-request-bytes`; the sidecar's default is 16 GiB). A
      request over it fails with `:too_large` before any work is done; an
      upload over it is refused by this client before a byte is sent.
    * `:max_in_flight` - the requests the sidecar accepts at once
      (`--max-in-flight`; default 10 000). Beyond it a call fails at once
      with `:overloaded`.
    * `:call_timeout` - the default deadline of `call/4`, in milliseconds
      (default `#{@default_call_timeout}`).
    * `:allowed_roots` - directories the sidecar may open stores in
      (`--allowed-root`, each expanded to an absolute path).
    * `:allow_pickle` - let codecs that can run code on decode, such as
      `pickle`, run (`--allow-pickle`; default `false`).
    * `:args` - extra command-line arguments for `python -m pybridge`,
      appended last.

  Unknown options raise `ArgumentError`.
  """
  @spec start_link([option]) :: GenServer.on_start()
  def start_link(opts) when is_list(opts) do
    config = validate_options!(opts)
    gen_opts = if config.name, do: [name: config.name], else: []
    GenServer.start_link(__MODULE__, config, gen_opts)
  end

  @doc """
  Sends the request `method` with `params` and waits for its result.

  `params` is a map with string (or atom) keys whose values
  `ZarrBridge.Msgpack` can encode; raw bytes go as `{:bin, iodata}`. The
  result is the sidecar's result map. A result that came as a stream or
  through shared memory carries its bytes as `"data" => {:bin, binary}`.

  ## Options

    * `:timeout` - the deadline in milliseconds, or `:infinity` (default:
      the sidecar's `:call_timeout`). When it passes the request is
      cancelled and `{:error, %ZarrBridge.Error{code: :timeout}}` is returned.
    * `:upload` - bytes (iodata) to upload as a stream after the request
      (PROTOCOL.md section 3). `"stream" => %{"bytes" => size}` is added to
      `params`, so the method must accept a streamed payload in place of
      `"data"`.
    * `:handoff` - how the `:upload` travels. `false` (the default): as a
      stream. `true`: through shared memory (same host only): the caller
      writes the bytes into a file `/dev/shm/pybridge-<sidecar os pid>-up-…`
      (mode 0600, created exclusively) and `"shm" => %{"path" => path,
      "bytes" => size}` is added to `params` instead; the sidecar reads it
      and removes it when the request ends, and the caller removes it too
      if it is still there. `:auto`: the same when the upload is at least the
      sidecar's handoff threshold (`handoff_threshold` in `hello`'s limits,
      4 MiB by default). When the file cannot be written (no `/dev/shm`, no
      space), or when handoff is not usable with this sidecar (see
      `handoff_usable?/1`), the upload goes as a stream. Only methods that
      take `"shm"` accept it: `array.write`, `array.append`,
      `array.write_chunk_raw` and the `codec.*` methods that take an input.
      Params with `"handoff" => true` (a result by handoff) are sent with
      `"handoff" => false` when handoff is not usable with this sidecar.

  ## Examples

      iex> ZarrBridge.Sidecar.call(ZarrBridge.Sidecar, "ping", %{})
      {:ok, %{"pong" => true}}
  """
  @spec call(server, String.t(), map, [call_option]) :: {:ok, map} | {:error, Error.t()}
  def call(server, method, params, opts \\ [])
      when is_binary(method) and is_map(params) and is_list(opts) do
    {timeout, upload, handoff} = call_options!(opts)

    case GenServer.whereis(server) do
      pid when is_pid(pid) -> do_call(pid, method, params, timeout, upload, handoff)
      _ -> {:error, not_running_error(server)}
    end
  end

  @doc """
  Same as `call/4`, but returns the result itself, or raises the
  `ZarrBridge.Error`.
  """
  @spec call!(server, String.t(), map, [call_option]) :: map
  def call!(server, method, params, opts \\ []) do
    case call(server, method, params, opts) do
      {:ok, result} -> result
      {:error, %Error{} = error} -> raise error
    end
  end

  @doc """
  The OS pid of the running sidecar, or `nil` while none runs.
  """
  @spec os_pid(server) :: pos_integer | nil
  def os_pid(server), do: GenServer.call(server, :os_pid)

  @doc """
  The result of the sidecar's `hello`: versions, limits, capabilities,
  OS pid and worker count (PROTOCOL.md section 4).

  Waits up to `timeout` for a sidecar that is starting.
  """
  @spec info(server, timeout) :: {:ok, map} | {:error, Error.t()}
  def info(server, timeout \\ @default_call_timeout), do: GenServer.call(server, :info, timeout)

  ## The caller's side of a call

  defp call_options!(opts) do
    Enum.reduce(opts, {nil, nil, false}, fn
      {:timeout, t}, {_, up, h} when t == :infinity or (is_integer(t) and t >= 0) ->
        {t, up, h}

      {:upload, data}, {t, _, h} when is_binary(data) or is_list(data) ->
        {t, data, h}

      {:handoff, h}, {t, up, _} when is_boolean(h) or h == :auto ->
        {t, up, h}

      other, _ ->
        raise ArgumentError,
              "invalid call option #{inspect(other)}; expected timeout: non-negative " <>
                "integer or :infinity, upload: iodata, handoff: boolean or :auto"
    end)
  end

  defp do_call(pid, method, params, timeout, upload, handoff) do
    timeout = timeout || :persistent_term.get({__MODULE__, pid}, @default_call_timeout)
    deadline = if timeout == :infinity, do: :infinity, else: now_ms() + timeout
    params = result_handoff(pid, params, deadline)

    upload_bytes = if upload == nil, do: nil, else: upload_size(upload)

    case upload_file(pid, upload, upload_bytes, handoff, deadline) do
      {:ok, path} ->
        params = Map.put(params, "shm", %{"path" => path, "bytes" => upload_bytes})

        try do
          send_call(pid, method, params, deadline, timeout, nil, nil)
        after
          # Normally gone already: the sidecar removes it when the request ends.
          _ = File.rm(path)
        end

      :stream ->
        params =
          case upload_bytes do
            nil -> params
            n -> Map.put(params, "stream", %{"bytes" => n})
          end

        send_call(pid, method, params, deadline, timeout, upload, upload_bytes)
    end
  end

  defp send_call(pid, method, params, deadline, timeout, upload, upload_bytes) do
    # The caller encodes its own request, so the sidecar process only adds
    # the message id in front.
    with {:ok, method_iodata} <- Msgpack.encode(method),
         {:ok, params_iodata} <- Msgpack.encode(params) do
      body = [method_iodata | params_iodata]
      ref = :erlang.monitor(:process, pid, alias: :demonitor)
      GenServer.cast(pid, {:call, ref, body, IO.iodata_length(body), upload_bytes})
      await(pid, ref, deadline, timeout, upload)
    else
      {:error, reason} ->
        {:error,
         %Error{
           code: :invalid_params,
           message: "params cannot be encoded as msgpack: #{inspect(reason, limit: 10)}",
           details: %{reason: reason}
         }}
    end
  end

  defp upload_size(data) do
    IO.iodata_length(data)
  rescue
    ArgumentError -> raise ArgumentError, "the :upload option must be iodata"
  end

  # The upload handoff (PROTOCOL.md section 3): {:ok, path} when the upload
  # was written into a shared-memory file for the sidecar, :stream when it
  # goes as a stream (handoff off, below the threshold, or the file could
  # not be written).
  defp upload_file(_pid, nil, _bytes, _handoff, _deadline), do: :stream
  defp upload_file(_pid, _upload, _bytes, false, _deadline), do: :stream

  defp upload_file(pid, upload, bytes, handoff, deadline) do
    with {:ok, %{"pid" => os_pid} = hello} when is_integer(os_pid) <- hello(pid, deadline),
         true <- handoff_usable?(hello),
         limits = Map.get(hello, "limits", %{}),
         true <-
           handoff == true or
             bytes >= positive(limits["handoff_threshold"], @default_handoff_threshold),
         # Over the limit the stream path refuses it without writing anything.
         true <- bytes <= positive(limits["max_request_bytes"], bytes),
         {:ok, path} <- write_upload_file(os_pid, upload) do
      {:ok, path}
    else
      _ -> :stream
    end
  end

  defp hello(pid, deadline) do
    GenServer.call(pid, :info, remaining(deadline))
  catch
    :exit, _ -> :error
  end

  # A request for a result by handoff ("handoff" => true) asks for the pipe
  # instead when this client cannot use handoff with the sidecar: the data
  # is the same, only its way differs.
  defp result_handoff(pid, %{"handoff" => true} = params, deadline) do
    case hello(pid, deadline) do
      {:ok, hello} -> if handoff_usable?(hello), do: params, else: %{params | "handoff" => false}
      _ -> params
    end
  end

  defp result_handoff(_pid, params, _deadline), do: params

  @doc """
  Whether this client can exchange data with the sidecar that answered
  `hello` through shared-memory files (PROTOCOL.md sections 3 and 4): the
  sidecar found `/dev/shm` usable (`"handoff" => %{"usable" => true}`), the
  client sees the same `/dev/shm` (same device, `"dev"`), and both run as
  the same user (`"uid"`; a handoff file is its owner's alone). When it is
  false, `call/4` sends uploads as streams and asks for results by the
  pipe (`"handoff" => false`). A `hello` without `"handoff"` allows it.
  """
  @spec handoff_usable?(map) :: boolean
  def handoff_usable?(%{"handoff" => %{} = status}) do
    status["usable"] != false and same_shm_dir?(status["dev"]) and same_user?(status["uid"])
  end

  def handoff_usable?(hello) when is_map(hello), do: true

  defp same_shm_dir?(dev) when is_integer(dev) do
    match?({:ok, %File.Stat{major_device: ^dev}}, File.stat("/dev/shm"))
  end

  defp same_shm_dir?(_dev), do: true

  defp same_user?(uid) when is_integer(uid), do: effective_uid() in [uid, nil]
  defp same_user?(_uid), do: true

  # This OS process's effective uid (from /proc; nil where there is none).
  defp effective_uid do
    case :persistent_term.get({__MODULE__, :euid}, :unknown) do
      :unknown ->
        uid = read_effective_uid()
        :persistent_term.put({__MODULE__, :euid}, uid)
        uid

      uid ->
        uid
    end
  end

  defp read_effective_uid do
    with {:ok, text} <- File.read("/proc/self/status"),
         [_, ids] <- Regex.run(~r/^Uid:\s+(.*)$/m, text),
         [_real, effective | _] <- String.split(ids),
         {uid, ""} <- Integer.parse(effective) do
      uid
    else
      _ -> nil
    end
  end

  # Creates /dev/shm/pybridge-<os pid>-up-<unique> with mode 0600 and no
  # moment at which another user could open it: the file is created inside
  # a fresh directory that only this user can enter, made 0600 there, then
  # hard-linked to its name (link(2) fails if the name exists, so the file
  # is created exclusively) before the directory goes; the bytes are
  # written afterwards through the descriptor. (Erlang creates files with
  # mode 0666 minus the umask, and has no way to pass a mode.)
  defp write_upload_file(os_pid, data) do
    path = "/dev/shm/pybridge-#{os_pid}-up-#{System.pid()}.#{System.unique_integer([:positive])}"
    stage = path <> ".stage"
    staged = stage <> "/data"

    with :ok <- File.mkdir(stage),
         :ok <- File.chmod(stage, 0o700),
         {:ok, fd} <- :file.open(staged, [:write, :raw, :binary, :exclusive]) do
      linked =
        with :ok <- File.chmod(staged, 0o600),
             :ok <- File.ln(staged, path),
             do: :ok

      _ = File.rm(staged)
      _ = File.rmdir(stage)

      written =
        with :ok <- linked,
             :ok <- :file.write(fd, data),
             do: :ok

      case {written, :file.close(fd)} do
        {:ok, :ok} ->
          {:ok, path}

        _failed ->
          if linked == :ok, do: File.rm(path)
          :error
      end
    else
      _ ->
        _ = File.rmdir(stage)
        :error
    end
  end

  defp await(pid, ref, deadline, timeout, upload) do
    receive do
      {^ref, {:upload, id, port, piece_bytes}} ->
        case send_upload(port, id, upload, piece_bytes, deadline, ref) do
          :ok ->
            await(pid, ref, deadline, timeout, nil)

          :timeout ->
            give_up(pid, ref, timeout)

          {:replied, reply} ->
            Process.demonitor(ref, [:flush])
            finish(reply)
        end

      {^ref, reply} ->
        Process.demonitor(ref, [:flush])
        finish(reply)

      {:DOWN, ^ref, _, _, reason} ->
        {:error, down_error(reason)}
    after
      remaining(deadline) -> give_up(pid, ref, timeout)
    end
  end

  # Deactivate the alias first: after that no reply can arrive. One may
  # already be in the mailbox, and then it is the answer.
  defp give_up(pid, ref, timeout) do
    Process.demonitor(ref, [:flush])

    receive do
      {^ref, {:upload, _id, _port, _piece_bytes}} -> cancel(pid, ref, timeout)
      {^ref, reply} -> finish(reply)
    after
      0 -> cancel(pid, ref, timeout)
    end
  end

  defp cancel(pid, ref, timeout) do
    GenServer.cast(pid, {:cancel, ref})

    {:error,
     %Error{
       code: :timeout,
       message: "no reply within #{timeout} ms; the request was cancelled",
       details: %{timeout: timeout}
     }}
  end

  defp finish({:ok, _result} = ok), do: ok
  defp finish({:error, %Error{}} = error), do: error

  defp finish({:stream, result, [piece]}), do: {:ok, Map.put(result, "data", {:bin, piece})}

  defp finish({:stream, result, reversed_pieces}) do
    data = IO.iodata_to_binary(:lists.reverse(reversed_pieces))
    {:ok, Map.put(result, "data", {:bin, data})}
  end

  defp remaining(:infinity), do: :infinity
  defp remaining(deadline), do: max(deadline - now_ms(), 0)

  # Writes the upload to the Port as stream.data frames of at most
  # piece_bytes each. Pieces are sub-binaries of the caller's data: nothing
  # is copied here.
  # The upload stops early when the reply arrives meanwhile (the sidecar
  # refused the request, or died): the rest would only be dropped.
  defp send_upload(port, id, data, piece_bytes, deadline, ref) do
    data
    |> :erlang.iolist_to_iovec()
    |> send_pieces({port, id, ref}, piece_bytes, deadline, [], 0)
  catch
    # The port closed under us: the sidecar died, and the process reports
    # :sidecar_exited to this caller.
    :error, :badarg -> :ok
    {:replied, reply} -> {:replied, reply}
  end

  defp send_pieces([], _to, _max, _deadline, [], _size), do: :ok

  defp send_pieces([], to, _max, deadline, acc, _size),
    do: send_piece(to, acc, deadline)

  defp send_pieces([bin | rest], to, max, deadline, acc, size) do
    room = max - size

    case byte_size(bin) do
      n when n < room ->
        send_pieces(rest, to, max, deadline, [bin | acc], size + n)

      n ->
        head = binary_part(bin, 0, room)
        rest = if n == room, do: rest, else: [binary_part(bin, room, n - room) | rest]

        with :ok <- send_piece(to, [head | acc], deadline) do
          send_pieces(rest, to, max, deadline, [], 0)
        end
    end
  end

  defp send_piece({port, id, ref}, reversed_parts, deadline) do
    receive do
      {^ref, reply} when elem(reply, 0) != :upload -> throw({:replied, reply})
    after
      0 -> :ok
    end

    if deadline != :infinity and now_ms() > deadline do
      :timeout
    else
      message = [
        2,
        "stream.data",
        %{"id" => id, "data" => {:bin, :lists.reverse(reversed_parts)}}
      ]

      true = Port.command(port, Msgpack.encode!(message))
      :ok
    end
  end

  defp not_running_error(server) do
    %Error{
      code: :sidecar_unavailable,
      message: "no sidecar process is running as #{inspect(server)}",
      details: %{reason: :noproc, retry_in_ms: nil}
    }
  end

  defp down_error(:noproc) do
    %Error{
      code: :sidecar_unavailable,
      message: "the sidecar process is not running",
      details: %{reason: :noproc, retry_in_ms: nil}
    }
  end

  defp down_error(reason) do
    %Error{
      code: :sidecar_exited,
      message: "the sidecar process stopped with the request pending: #{inspect(reason)}",
      details: %{exit_status: nil, reason: reason}
    }
  end

  ## Options

  @doc false
  @spec validate_options!(keyword) :: map
  def validate_options!(opts) do
    unless Keyword.keyword?(opts) do
      raise ArgumentError, "expected a keyword list of options, got: #{inspect(opts)}"
    end

    defaults = %{
      name: nil,
      python: nil,
      workers: nil,
      env: [],
      max_frame_bytes: nil,
      max_request_bytes: nil,
      max_in_flight: nil,
      call_timeout: @default_call_timeout,
      allowed_roots: [],
      allow_pickle: false,
      args: []
    }

    Enum.reduce(opts, defaults, fn {key, value}, acc ->
      if key not in @option_keys do
        raise ArgumentError,
              "unknown option #{inspect(key)} for ZarrBridge.Sidecar; " <>
                "known options: #{Enum.map_join(@option_keys, ", ", &inspect/1)}"
      end

      Map.put(acc, key, validate_option!(key, erlang_strings(key, value)))
    end)
  end

  # Paths given as Erlang strings (charlists) become Elixir strings.
  defp erlang_strings(:python, path), do: ZarrBridge.Options.text(path)

  defp erlang_strings(:allowed_roots, roots) when is_list(roots),
    do: Enum.map(roots, &ZarrBridge.Options.text/1)

  defp erlang_strings(_key, value), do: value

  defp validate_option!(:name, name)
       when is_atom(name) or (is_tuple(name) and elem(name, 0) in [:global, :via]),
       do: name

  defp validate_option!(:python, path) when is_binary(path) and path != "", do: path
  defp validate_option!(:python, nil), do: nil
  defp validate_option!(:workers, n) when is_integer(n) and n > 0, do: n
  defp validate_option!(:workers, nil), do: nil
  defp validate_option!(:max_frame_bytes, n) when is_integer(n) and n > 0, do: n
  defp validate_option!(:max_frame_bytes, nil), do: nil
  defp validate_option!(:max_request_bytes, n) when is_integer(n) and n > 0, do: n
  defp validate_option!(:max_request_bytes, nil), do: nil
  defp validate_option!(:max_in_flight, n) when is_integer(n) and n > 0, do: n
  defp validate_option!(:max_in_flight, nil), do: nil
  defp validate_option!(:call_timeout, :infinity), do: :infinity
  defp validate_option!(:call_timeout, n) when is_integer(n) and n >= 0, do: n
  defp validate_option!(:allow_pickle, flag) when is_boolean(flag), do: flag

  defp validate_option!(:env, env) when is_list(env) do
    Enum.map(env, fn
      {name, value} when is_binary(name) and (is_binary(value) or is_nil(value)) ->
        {name, value}

      other ->
        raise ArgumentError,
              "invalid :env entry #{inspect(other)}; expected {name, value} with string " <>
                "name and string or nil value"
    end)
  end

  defp validate_option!(:allowed_roots, roots) when is_list(roots) do
    Enum.map(roots, fn
      root when is_binary(root) and root != "" ->
        Path.expand(root)

      other ->
        raise ArgumentError, "invalid :allowed_roots entry #{inspect(other)}; expected a path"
    end)
  end

  defp validate_option!(:args, args) when is_list(args) do
    if Enum.all?(args, &is_binary/1) do
      args
    else
      raise ArgumentError, "invalid :args #{inspect(args)}; expected a list of strings"
    end
  end

  defp validate_option!(key, value) do
    expected =
      case key do
        :name -> "an atom, {:global, term} or {:via, module, term}"
        :python -> "a path to an executable"
        :workers -> "a positive integer"
        :max_frame_bytes -> "a positive integer"
        :max_request_bytes -> "a positive integer"
        :max_in_flight -> "a positive integer"
        :call_timeout -> "a non-negative integer or :infinity"
        :allow_pickle -> "a boolean"
        :env -> "a list of {name, value} string pairs"
        :allowed_roots -> "a list of directories"
        :args -> "a list of strings"
      end

    raise ArgumentError,
          "invalid value for #{inspect(key)}: #{inspect(value)}; expected #{expected}"
  end

  ## GenServer

  defstruct [
    :config,
    # :starting (hello sent, calls are queued), :ready, :waiting (a restart
    # is scheduled, calls fail at once) or :failed (protocol mismatch).
    :phase,
    :port,
    :os_pid,
    :started_at,
    :hello_id,
    :hello_timer,
    :hello,
    :max_frame_bytes,
    :stream_frame_bytes,
    # the sidecar's max_request_bytes (nil when it reports none)
    :max_request_bytes,
    # {reason, text} of the last failure, for :sidecar_unavailable errors
    :last_error,
    :retry_at,
    # the %Error{} every call gets in the :failed phase
    :fatal_error,
    # the launch (see ZarrBridge.Sidecar.Launcher) of the running sidecar
    :launch,
    # the reason of the last configuration error (logged once), or nil
    :config_error,
    # the error map of the sidecar's "sidecar.failed" notification
    :failed_note,
    failures: 0,
    next_id: 1,
    # id => {alias, reversed stream pieces, frame count, byte count}
    pending: %{},
    # alias => id, to cancel
    refs: %{},
    # calls that arrived while starting, newest first: {alias, body, size, upload}
    # (upload: the upload's size, or nil)
    queue: [],
    # GenServer.from of info/2 callers waiting for hello
    info_waiters: []
  ]

  @impl true
  def init(config) do
    Process.flag(:trap_exit, true)
    # Callers read the default deadline without a message round trip. The
    # value is an immediate term, so erasing it later costs no global GC.
    :persistent_term.put({__MODULE__, self()}, config.call_timeout)
    {:ok, %__MODULE__{config: config, phase: :starting}, {:continue, :start}}
  end

  @impl true
  def handle_continue(:start, state), do: {:noreply, start_sidecar(state)}

  @impl true
  def handle_cast({:call, ref, body, size, upload}, state) do
    case state.phase do
      :ready ->
        {:noreply, send_request(state, ref, body, size, upload)}

      :starting ->
        {:noreply, %{state | queue: [{ref, body, size, upload} | state.queue]}}

      :waiting ->
        reply(ref, {:error, unavailable_error(state)})
        {:noreply, state}

      :failed ->
        reply(ref, {:error, state.fatal_error})
        {:noreply, state}
    end
  end

  def handle_cast({:cancel, ref}, state) do
    case Map.pop(state.refs, ref) do
      {nil, _refs} ->
        {:noreply, %{state | queue: Enum.reject(state.queue, &(elem(&1, 0) == ref))}}

      {id, refs} ->
        notify(state.port, "cancel", %{"id" => id})
        {:noreply, %{state | refs: refs, pending: Map.delete(state.pending, id)}}
    end
  end

  @impl true
  def handle_call(:os_pid, _from, state), do: {:reply, state.os_pid, state}

  def handle_call(:info, from, state) do
    case state.phase do
      :ready -> {:reply, {:ok, state.hello}, state}
      :starting -> {:noreply, %{state | info_waiters: [from | state.info_waiters]}}
      :waiting -> {:reply, {:error, unavailable_error(state)}, state}
      :failed -> {:reply, {:error, state.fatal_error}, state}
    end
  end

  @impl true
  def handle_info({port, {:data, frame}}, %{port: port} = state) do
    case Msgpack.decode(frame) do
      {:ok, message} ->
        handle_message(message, state)

      {:error, reason} ->
        Logger.warning(
          "#{log_name()}: dropped an undecodable frame of #{byte_size(frame)} bytes " <>
            "from the sidecar: #{inspect(reason)}"
        )

        {:noreply, state}
    end
  end

  def handle_info({port, {:exit_status, status}}, %{port: port} = state) do
    {:noreply, sidecar_down(state, status)}
  end

  def handle_info({:EXIT, port, reason}, %{port: port} = state) do
    # The port closed without an exit status (it should not happen with
    # :exit_status, but a port can fail on its own).
    Logger.warning("#{log_name()}: the sidecar's port closed: #{inspect(reason)}")
    {:noreply, sidecar_down(state, nil)}
  end

  def handle_info({:hello_timeout, port}, %{port: port, phase: :starting} = state) do
    kill_os_process(state.os_pid)
    close_port(port)

    text = "the sidecar did not answer hello within #{div(@hello_timeout, 1000)} s"
    {:noreply, failure(state, :hello_timeout, text)}
  end

  def handle_info(:restart, %{phase: :waiting} = state) do
    {:noreply, start_sidecar(%{state | retry_at: nil})}
  end

  # Leftovers from a port that is gone, and links other than the parent's
  # (which GenServer handles itself).
  def handle_info({port, _message}, state) when is_port(port), do: {:noreply, state}
  def handle_info({:EXIT, _from, _reason}, state), do: {:noreply, state}
  def handle_info({:hello_timeout, _port}, state), do: {:noreply, state}
  def handle_info(:restart, state), do: {:noreply, state}

  def handle_info(message, state) do
    Logger.debug("#{log_name()}: unexpected message #{inspect(message, limit: 10)}")
    {:noreply, state}
  end

  @impl true
  def terminate(_reason, state) do
    # The sidecar exits when its input reaches EOF; pending callers see
    # this process go down through their monitors.
    close_port(state.port)
    :persistent_term.erase({__MODULE__, self()})
    :ok
  end

  ## Starting the sidecar

  defp start_sidecar(state) do
    config = state.config

    case Launcher.resolve(python: config.python) do
      {:ok, launch} ->
        state = %{state | launch: launch, failed_note: nil}

        case still_broken(state, launch) do
          nil -> open_port(state, launch)
          {reason, text} -> failure(%{state | started_at: nil}, reason, text)
        end

      {:error, %Error{details: %{reason: reason}} = error} ->
        failure(%{state | started_at: nil}, reason, "cannot start the sidecar: " <> error.message)
    end
  end

  # After a configuration error, a quiet check (its output captured) comes
  # before the next real start, so that a broken environment does not print
  # its traceback to the console at every retry. nil: go ahead.
  defp still_broken(%{config_error: {kind, _}} = state, launch)
       when kind in [:pybridge_not_importable, :worker_pool_failed] do
    modules = if kind == :worker_pool_failed, do: Launcher.worker_modules(), else: ["pybridge"]

    case Launcher.check_import(launch, state.config.env, modules) do
      :ok -> nil
      {:error, _output} -> state.last_error
    end
  end

  defp still_broken(_state, _launch), do: nil

  defp open_port(state, launch) do
    {python, args, env} = Launcher.port_command(launch, state.config)

    port_opts = [:binary, {:packet, 4}, :nouse_stdio, :exit_status, args: args, env: env]

    try do
      Port.open({:spawn_executable, python}, port_opts)
    rescue
      error in ErlangError ->
        reason = error.original

        failure(
          %{state | started_at: nil},
          {:spawn_failed, reason},
          "cannot start the sidecar: spawning #{python} failed: #{inspect(reason)}"
        )
    else
      port ->
        {:os_pid, os_pid} = Port.info(port, :os_pid) || {:os_pid, nil}
        {id, state} = next_id(%{state | hello_id: nil})
        params = %{"protocol" => @protocol, "client" => "zarr_bridge #{vsn()}"}
        Port.command(port, Msgpack.encode!([0, id, "hello", params]))

        %{
          state
          | phase: :starting,
            port: port,
            os_pid: os_pid,
            started_at: now_ms(),
            hello_id: id,
            hello_timer: Process.send_after(self(), {:hello_timeout, port}, @hello_timeout)
        }
    end
  end

  defp hello_done(state, {:ok, %{"protocol" => version} = hello}) when is_binary(version) do
    case String.split(version, ".") do
      [@protocol_major | _] ->
        ready(state, hello)

      _ ->
        fatal(
          state,
          "the sidecar speaks protocol #{version}, this client #{@protocol}; " <>
            "install matching versions of pybridge and zarr_bridge"
        )
    end
  end

  defp hello_done(state, {:error, %Error{code: :protocol_mismatch} = error}) do
    fatal(state, "the sidecar refused protocol #{@protocol}: #{error.message}")
  end

  defp hello_done(state, reply) do
    close_port(state.port)
    text = "the sidecar answered hello with #{inspect(reply, limit: 20)}"
    failure(state, {:hello_failed, reply}, text)
  end

  defp ready(state, hello) do
    cancel_timer(state.hello_timer)
    limits = Map.get(hello, "limits", %{})

    if state.failures > 0 and state.config_error == nil do
      Logger.info("#{log_name()}: the sidecar is running again (os pid #{state.os_pid})")
    end

    state = %{
      state
      | phase: :ready,
        hello: hello,
        hello_id: nil,
        hello_timer: nil,
        last_error: nil,
        max_frame_bytes:
          state.config.max_frame_bytes ||
            positive(limits["max_frame_bytes"], @default_max_frame_bytes),
        stream_frame_bytes: positive(limits["stream_frame_bytes"], @default_stream_frame_bytes),
        max_request_bytes: positive(limits["max_request_bytes"], nil)
    }

    Enum.each(state.info_waiters, &GenServer.reply(&1, {:ok, hello}))

    state.queue
    |> Enum.reverse()
    |> Enum.reduce(%{state | queue: [], info_waiters: []}, fn {ref, body, size, upload}, acc ->
      send_request(acc, ref, body, size, upload)
    end)
  end

  # A protocol mismatch does not go away by restarting: stop for good.
  defp fatal(state, text) do
    cancel_timer(state.hello_timer)
    close_port(state.port)
    Logger.error("#{log_name()}: #{text}; not restarting it")

    error = %Error{code: :protocol_mismatch, message: text, details: %{client: @protocol}}

    state = %{
      state
      | phase: :failed,
        port: nil,
        os_pid: nil,
        hello_id: nil,
        hello_timer: nil,
        fatal_error: error
    }

    fail_waiting(state, error)
  end

  defp sidecar_down(state, status) do
    cancel_timer(state.hello_timer)
    {reason, text} = down_reason(state, status)

    error =
      if status == @pool_failed_status do
        %Error{
          code: :sidecar_unavailable,
          message: "the sidecar is not running: #{text}",
          details: %{reason: reason, exit_status: status, retry_in_ms: 0}
        }
      else
        %Error{
          code: :sidecar_exited,
          message: "the sidecar exited (#{status_text(status)}) with the request pending",
          details: %{exit_status: status}
        }
      end

    Enum.each(state.pending, fn {_id, {ref, _, _, _}} -> reply(ref, {:error, error}) end)
    sweep_shared_memory(state.os_pid)
    failure(%{state | pending: %{}, refs: %{}}, reason, text)
  end

  # Why the sidecar went away: {reason, text}.
  defp down_reason(%{failed_note: %Error{} = note}, @pool_failed_status) do
    {{:worker_pool_failed, note.message},
     note.message <>
       " (the sidecar's stderr above has the traceback; a module on its import path, " <>
       "from $PYTHONPATH or the :env option, may shadow numpy, numcodecs or zarr)"}
  end

  defp down_reason(_state, @pool_failed_status) do
    {{:worker_pool_failed, nil},
     "the sidecar exited (status #{@pool_failed_status}): its worker pool cannot start " <>
       "(its stderr above says why)"}
  end

  defp down_reason(%{phase: :starting} = state, status) do
    case Launcher.check_import(state.launch, state.config.env) do
      {:error, output} ->
        {{:pybridge_not_importable, output},
         "#{state.launch.python} (#{state.launch.why}) cannot import pybridge " <>
           "(#{last_line(output)}); run `mix zarr_bridge.install` in your project, " <>
           "or point the :python option or $ZARR_BRIDGE_PYTHON at a Python that has it"}

      :ok ->
        {{:exit_status, status},
         "the sidecar exited (#{status_text(status)}) before answering hello; " <>
           "its stderr above says why"}
    end
  end

  defp down_reason(state, status) do
    uptime = (now_ms() - state.started_at) / 1000

    {{:exit_status, status},
     "the sidecar exited (#{status_text(status)}) after " <>
       "#{:erlang.float_to_binary(uptime, decimals: 1)} s"}
  end

  defp last_line(output), do: output |> String.split("\n", trim: true) |> List.last("")

  # Errors that restarting does not fix: logged once, retried quietly.
  defp config_error?({kind, _})
       when kind in [
              :python_not_found,
              :no_python_env,
              :pybridge_not_importable,
              :worker_pool_failed
            ],
       do: true

  defp config_error?(_reason), do: false

  # Records a failed or ended sidecar and starts the next one now or later.
  defp failure(state, reason, text) do
    cancel_timer(state.hello_timer)
    now = now_ms()
    lived = if state.started_at, do: now - state.started_at, else: 0
    config? = config_error?(reason)
    failures = if lived >= @stable_ms and not config?, do: 1, else: state.failures + 1

    delay =
      cond do
        config? -> backoff(max(failures, 2))
        failures == 1 or lived > @long_lived_ms -> 0
        true -> backoff(failures)
      end

    next = if delay == 0, do: "restarting it now", else: "next attempt in #{delay} ms"

    cond do
      config? and state.config_error == reason ->
        Logger.debug("#{log_name()}: #{text}; #{next} (failure #{failures})")

      config? ->
        Logger.error(
          "#{log_name()}: #{text}; retrying quietly until it starts (failure #{failures})"
        )

      true ->
        Logger.error("#{log_name()}: #{text}; #{next} (failure #{failures})")
    end

    state = %{
      state
      | port: nil,
        os_pid: nil,
        started_at: nil,
        hello_id: nil,
        hello_timer: nil,
        failures: failures,
        last_error: {reason, text},
        config_error: if(config?, do: reason, else: nil)
    }

    if delay == 0 do
      start_sidecar(state)
    else
      Process.send_after(self(), :restart, delay)
      state = %{state | phase: :waiting, retry_at: now + delay}
      fail_waiting(state, unavailable_error(state))
    end
  end

  defp backoff(failures),
    do: min(@backoff_first_ms * Integer.pow(2, failures - 2), @backoff_cap_ms)

  defp fail_waiting(state, error) do
    Enum.each(state.info_waiters, &GenServer.reply(&1, {:error, error}))
    Enum.each(state.queue, fn {ref, _, _, _} -> reply(ref, {:error, error}) end)
    %{state | queue: [], info_waiters: []}
  end

  defp unavailable_error(%{last_error: {reason, text}, retry_at: retry_at}) do
    retry_in = if retry_at, do: max(retry_at - now_ms(), 0), else: 0

    %Error{
      code: :sidecar_unavailable,
      message: "the sidecar is not running: #{text}; next start attempt in #{retry_in} ms",
      details: %{reason: reason, retry_in_ms: retry_in}
    }
  end

  ## Requests and replies

  defp send_request(state, ref, body, size, upload) do
    {id, state} = next_id(state)
    header = [<<0x94, 0>> | Msgpack.encode!(id)]
    frame_size = IO.iodata_length(header) + size
    request_limit = state.max_request_bytes

    cond do
      frame_size > state.max_frame_bytes ->
        reply(
          ref,
          {:error,
           %Error{
             code: :frame_too_large,
             message:
               "the request frame is #{frame_size} bytes, over the limit of " <>
                 "#{state.max_frame_bytes}; send large payloads with the :upload option",
             details: %{bytes: frame_size, limit: state.max_frame_bytes}
           }}
        )

        state

      # Refused here, so that a huge upload is not sent only to be dropped.
      upload != nil and request_limit != nil and upload > request_limit ->
        reply(
          ref,
          {:error,
           %Error{
             code: :too_large,
             message:
               "an upload of #{upload} bytes is over the sidecar's per-request limit of " <>
                 "#{request_limit} bytes (the :max_request_bytes option)",
             details: %{bytes: upload, limit: request_limit}
           }}
        )

        state

      true ->
        # A closed port raises; the exit message that follows fails the call.
        try do
          Port.command(state.port, [header | body])
        catch
          :error, :badarg -> :ok
        end

        if upload != nil,
          do: send(ref, {ref, {:upload, id, state.port, state.stream_frame_bytes}})

        %{
          state
          | pending: Map.put(state.pending, id, {ref, [], 0, 0}),
            refs: Map.put(state.refs, ref, id)
        }
    end
  end

  defp next_id(%{next_id: id} = state) when id > @max_id, do: next_id(%{state | next_id: 1})

  defp next_id(%{next_id: id} = state) do
    if Map.has_key?(state.pending, id) or id == state.hello_id do
      next_id(%{state | next_id: id + 1})
    else
      {id, %{state | next_id: id + 1}}
    end
  end

  defp handle_message([1, id, error, result], %{hello_id: id} = state) when is_integer(id) do
    {:noreply, hello_done(state, response(error, result))}
  end

  defp handle_message([1, id, error, result], state) when is_integer(id) do
    case Map.pop(state.pending, id) do
      {{ref, pieces, frames, bytes}, pending} ->
        deliver(ref, complete(response(error, result), pieces, frames, bytes, state.os_pid))
        {:noreply, %{state | pending: pending, refs: Map.delete(state.refs, ref)}}

      {nil, _pending} ->
        late_reply(id, error, result, state)
        {:noreply, state}
    end
  end

  defp handle_message([2, "stream.data", %{"id" => id, "data" => {:bin, piece}}], state) do
    case state.pending do
      %{^id => {ref, pieces, frames, bytes}} ->
        entry = {ref, [piece | pieces], frames + 1, bytes + byte_size(piece)}
        {:noreply, %{state | pending: Map.put(state.pending, id, entry)}}

      _cancelled ->
        {:noreply, state}
    end
  end

  defp handle_message([2, "sidecar.failed", %{} = error], state) do
    {:noreply, %{state | failed_note: Error.from_wire(error)}}
  end

  defp handle_message([2, method, _params], state) when is_binary(method) do
    Logger.debug("#{log_name()}: ignored a #{inspect(method)} notification from the sidecar")
    {:noreply, state}
  end

  defp handle_message(other, state) do
    Logger.warning(
      "#{log_name()}: dropped a message of unknown shape from the sidecar: " <>
        inspect(other, limit: 10, printable_limit: 200)
    )

    {:noreply, state}
  end

  defp response(nil, %{} = result), do: {:ok, result}
  defp response(error, nil) when error != nil, do: {:error, Error.from_wire(error)}

  defp response(error, result) do
    {:error,
     %Error{
       code: :invalid_message,
       message:
         "the sidecar sent a response with error #{inspect(error, limit: 5)} and " <>
           "result #{inspect(result, limit: 5)}; exactly one must be nil",
       details: %{}
     }}
  end

  # Turns a response into the message for the caller. Stream pieces are
  # joined by the caller, so this process never copies a large payload.
  defp complete({:error, _} = error, _pieces, _frames, _bytes, _os_pid), do: error

  defp complete({:ok, %{"stream" => stream} = result}, pieces, frames, bytes, _os_pid) do
    case stream do
      %{"frames" => ^frames, "bytes" => ^bytes} ->
        {:stream, Map.delete(result, "stream"), pieces}

      _ ->
        {:error,
         %Error{
           code: :invalid_message,
           message:
             "the stream announced #{inspect(stream)} but #{frames} frames of " <>
               "#{bytes} bytes arrived",
           details: %{stream: stream, frames: frames, bytes: bytes}
         }}
    end
  end

  defp complete({:ok, %{"shm" => shm} = result}, [], 0, 0, os_pid) do
    case shm do
      %{"path" => path, "bytes" => bytes} when is_binary(path) and is_integer(bytes) ->
        if own_segment?(path, os_pid) do
          {:shm, Map.delete(result, "shm"), path, bytes}
        else
          bad_shm(shm)
        end

      _ ->
        bad_shm(shm)
    end
  end

  defp complete({:ok, _result} = ok, [], 0, 0, _os_pid), do: ok

  defp complete({:ok, _result}, _pieces, frames, _bytes, _os_pid) do
    {:error,
     %Error{
       code: :invalid_message,
       message: "#{frames} stream.data frames arrived for a result that has no \"stream\"",
       details: %{frames: frames}
     }}
  end

  defp bad_shm(shm) do
    {:error,
     %Error{
       code: :invalid_message,
       message: "the result names an invalid shared-memory handoff: #{inspect(shm)}",
       details: %{shm: shm}
     }}
  end

  # Only files the protocol allows: /dev/shm/pybridge-<this sidecar's pid>-…
  defp own_segment?(path, os_pid) do
    prefix = "/dev/shm/pybridge-#{os_pid}-"

    String.starts_with?(path, prefix) and
      not String.contains?(
        binary_part(path, byte_size(prefix), byte_size(path) - byte_size(prefix)),
        "/"
      )
  end

  # A reply for a request that is no longer pending (it was cancelled):
  # drop it, but remove the shared-memory file it may name.
  defp late_reply(id, error, result, state) do
    case result do
      %{"shm" => %{"path" => path}} when is_binary(path) ->
        if own_segment?(path, state.os_pid), do: File.rm(path)

      _ ->
        :ok
    end

    if id == 0 and error != nil do
      Logger.warning(
        "#{log_name()}: the sidecar reported an error for no request: " <>
          Exception.message(Error.from_wire(error))
      )
    end
  end

  defp reply(ref, message), do: send(ref, {ref, message})

  # A handoff file is read (and removed) by a process of its own: this
  # process does not wait for a large read, and the file goes away even when
  # the caller has given up and its alias drops the reply.
  defp deliver(ref, {:shm, result, path, bytes}) do
    spawn(fn ->
      read = read_raw(path, bytes)
      reply(ref, handoff_result(result, path, bytes, read))
      # Removing the file frees its pages, which takes a while for a large
      # one (about 30 ms for 256 MiB): done after the reply, off the
      # caller's path.
      _ = :file.delete(path, [:raw])
    end)
  end

  defp deliver(ref, message), do: reply(ref, message)

  defp handoff_result(result, path, bytes, read) do
    case read do
      {:ok, data} when byte_size(data) == bytes ->
        {:ok, Map.put(result, "data", {:bin, data})}

      {:ok, data} ->
        wrong_handoff_size(path, "#{byte_size(data)}", bytes)

      {:longer, _} ->
        wrong_handoff_size(path, "more than #{bytes}", bytes)

      {:error, posix} ->
        {:error,
         %Error{
           code: :internal,
           message: "cannot read the shared-memory handoff #{path}: #{:file.format_error(posix)}",
           details: %{path: path, reason: posix}
         }}
    end
  end

  defp wrong_handoff_size(path, held, bytes) do
    {:error,
     %Error{
       code: :invalid_message,
       message:
         "the shared-memory handoff #{path} holds #{held} bytes, the result announced #{bytes}",
       details: %{path: path, bytes: held, expected: bytes}
     }}
  end

  # A raw file is read by this process itself (File.read/1 would go through
  # the :file_server process, which would then hold the large binary until
  # its next garbage collection). A file longer than announced is noticed
  # by reading on.
  defp read_raw(path, bytes) do
    with {:ok, fd} <- :file.open(path, [:read, :raw, :binary]) do
      try do
        with {:ok, data} <- read_exactly(fd, bytes),
             :eof <- :file.read(fd, 1) do
          {:ok, data}
        else
          {:ok, _more} -> {:longer, bytes}
          {:error, _} = error -> error
        end
      after
        :file.close(fd)
      end
    end
  end

  defp read_exactly(_fd, 0), do: {:ok, ""}

  defp read_exactly(fd, bytes) do
    case :file.read(fd, bytes) do
      :eof -> {:ok, ""}
      other -> other
    end
  end

  defp notify(nil, _method, _params), do: :ok

  defp notify(port, method, params) do
    Port.command(port, Msgpack.encode!([2, method, params]))
  catch
    :error, :badarg -> :ok
  end

  ## OS helpers

  defp close_port(nil), do: :ok

  defp close_port(port) do
    Port.close(port)
  catch
    :error, :badarg -> :ok
  end

  defp kill_os_process(nil), do: :ok

  defp kill_os_process(os_pid),
    do: System.cmd("kill", ["-KILL", Integer.to_string(os_pid)], stderr_to_stdout: true)

  defp sweep_shared_memory(nil), do: :ok

  # Segment files, and the staging directory of an upload file whose
  # writer died half-way (File.rm_rf/1 removes a symlink, not its target).
  defp sweep_shared_memory(os_pid) do
    "/dev/shm/pybridge-#{os_pid}-*"
    |> Path.wildcard()
    |> Enum.each(&File.rm_rf/1)
  end

  defp cancel_timer(nil), do: :ok
  defp cancel_timer(timer), do: Process.cancel_timer(timer, async: true, info: false)

  defp status_text(nil), do: "no exit status"
  defp status_text(status) when status > 128, do: "status #{status}, signal #{status - 128}"
  defp status_text(status), do: "status #{status}"

  defp positive(n, _default) when is_integer(n) and n > 0, do: n
  defp positive(_n, default), do: default

  defp log_name do
    case Process.info(self(), :registered_name) do
      {:registered_name, name} when is_atom(name) -> "ZarrBridge.Sidecar #{inspect(name)}"
      _ -> "ZarrBridge.Sidecar #{inspect(self())}"
    end
  end

  defp vsn do
    case Application.spec(:zarr_bridge, :vsn) do
      nil -> "unknown"
      vsn -> List.to_string(vsn)
    end
  end

  defp now_ms, do: System.monotonic_time(:millisecond)
end
