defmodule ZarrBridge.Sidecar.Connection do
  @moduledoc false
  # The process that owns the Port to one sidecar, as a :gen_statem:
  #
  #   :starting  the sidecar was spawned and asked hello; calls and info
  #              requests are postponed until it answers
  #   :ready     requests go out at once; replies come back by message id
  #   :backoff   a restart is scheduled (ZarrBridge.Sidecar.Backoff); calls
  #              fail at once with :sidecar_unavailable
  #   :failed    the sidecar speaks another major protocol version; every
  #              call fails with :protocol_mismatch, for good
  #
  # Frames are built and parsed by ZarrBridge.Sidecar.Protocol, handoff
  # files handled by ZarrBridge.Sidecar.Handoff, the Python found by
  # ZarrBridge.Sidecar.Launcher. What callers need without a message (the
  # default deadline and the limits hello announced) is kept in a table of
  # this process (ZarrBridge.Sidecar.Table).

  @behaviour :gen_statem

  require Logger

  alias ZarrBridge.Error
  alias ZarrBridge.Sidecar.{Backoff, Failure, Handoff, Launcher, Protocol, Table}

  @hello_timeout 30_000
  # PROTOCOL.md §4's defaults, for a hello that does not give a limit.
  @default_max_frame_bytes 64 * 1024 * 1024
  @default_stream_frame_bytes 256 * 1024
  @default_handoff_threshold 4 * 1024 * 1024

  defstruct [
    :config,
    :table,
    :port,
    :os_pid,
    :started_at,
    :hello_id,
    :hello,
    :max_frame_bytes,
    :stream_frame_bytes,
    # the sidecar's max_request_bytes (nil when it reports none)
    :max_request_bytes,
    # {reason, text} of the last failure, for :sidecar_unavailable errors
    :last_error,
    :retry_at,
    # the %Error{} every call gets in the :failed state
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
    refs: %{}
  ]

  ## :gen_statem

  @doc "Starts the connection with a validated config map."
  @spec start_link(map) :: :gen_statem.start_ret()
  def start_link(config) do
    case config.name do
      nil -> :gen_statem.start_link(__MODULE__, config, [])
      name when is_atom(name) -> :gen_statem.start_link({:local, name}, __MODULE__, config, [])
      name -> :gen_statem.start_link(name, __MODULE__, config, [])
    end
  end

  @impl true
  def callback_mode, do: :handle_event_function

  @impl true
  def init(config) do
    Process.flag(:trap_exit, true)
    table = Table.new(config.call_timeout)
    data = %__MODULE__{config: config, table: table}
    {:ok, :starting, data, [{:next_event, :internal, :start}]}
  end

  @impl true
  def handle_event(:internal, :start, _state, data), do: start_sidecar(data)
  def handle_event({:timeout, :restart}, _, :backoff, data), do: start_sidecar(data)

  def handle_event(:state_timeout, :hello, :starting, data) do
    kill_os_process(data.os_pid)
    close_port(data.port)
    text = "the sidecar did not answer hello within #{div(@hello_timeout, 1000)} s"
    failure(data, :hello_timeout, text)
  end

  # Calls

  def handle_event(:cast, {:call, _, _, _, _}, :starting, _data),
    do: {:keep_state_and_data, :postpone}

  def handle_event(:cast, {:cancel, _}, :starting, _data), do: {:keep_state_and_data, :postpone}

  def handle_event(:cast, {:call, ref, body, size, upload}, :ready, data),
    do: {:keep_state, send_request(data, ref, body, size, upload)}

  def handle_event(:cast, {:call, ref, _, _, _}, state, data) do
    reply(ref, {:error, state_error(state, data)})
    :keep_state_and_data
  end

  def handle_event(:cast, {:cancel, ref}, _state, data) do
    case Map.pop(data.refs, ref) do
      {nil, _refs} ->
        :keep_state_and_data

      {id, refs} ->
        notify(data.port, "cancel", %{"id" => id})
        {:keep_state, %{data | refs: refs, pending: Map.delete(data.pending, id)}}
    end
  end

  def handle_event({:call, from}, :os_pid, _state, data),
    do: {:keep_state_and_data, [{:reply, from, data.os_pid}]}

  def handle_event({:call, _from}, :info, :starting, _data), do: {:keep_state_and_data, :postpone}

  def handle_event({:call, from}, :info, :ready, data),
    do: {:keep_state_and_data, [{:reply, from, {:ok, data.hello}}]}

  def handle_event({:call, from}, :info, state, data),
    do: {:keep_state_and_data, [{:reply, from, {:error, state_error(state, data)}}]}

  # The Port

  def handle_event(:info, {port, {:data, frame}}, state, %{port: port} = data) do
    case Protocol.parse(frame) do
      {:ok, message} ->
        handle_message(message, state, data)

      {:error, reason} ->
        Logger.warning(
          "#{log_name()}: dropped an undecodable frame of #{byte_size(frame)} bytes " <>
            "from the sidecar: #{inspect(reason)}"
        )

        :keep_state_and_data
    end
  end

  def handle_event(:info, {port, {:exit_status, status}}, state, %{port: port} = data),
    do: sidecar_down(data, state, status)

  def handle_event(:info, {:EXIT, port, reason}, state, %{port: port} = data) do
    # The port closed without an exit status (it should not happen with
    # :exit_status, but a port can fail on its own).
    Logger.warning("#{log_name()}: the sidecar's port closed: #{inspect(reason)}")
    sidecar_down(data, state, nil)
  end

  # Leftovers from a port that is gone, and links other than the parent's
  # (which :gen_statem handles itself).
  def handle_event(:info, {port, _message}, _state, _data) when is_port(port),
    do: :keep_state_and_data

  def handle_event(:info, {:EXIT, _from, _reason}, _state, _data), do: :keep_state_and_data

  def handle_event(:info, message, _state, _data) do
    Logger.debug("#{log_name()}: unexpected message #{inspect(message, limit: 10)}")
    :keep_state_and_data
  end

  @impl true
  def terminate(_reason, _state, data) do
    # The sidecar exits when its input reaches EOF; pending callers see
    # this process go down through their monitors.
    close_port(data.port)
    Table.forget()
    :ok
  end

  defp state_error(:failed, data), do: data.fatal_error
  defp state_error(_backoff, data), do: Failure.unavailable_error(data.last_error, data.retry_at)

  ## Starting the sidecar

  defp start_sidecar(data) do
    case Launcher.resolve(python: data.config.python) do
      {:ok, launch} ->
        data = %{data | launch: launch, failed_note: nil}

        case still_broken(data, launch) do
          nil -> open_port(data, launch)
          {reason, text} -> failure(%{data | started_at: nil}, reason, text)
        end

      {:error, %Error{details: %{reason: reason}} = error} ->
        failure(%{data | started_at: nil}, reason, "cannot start the sidecar: " <> error.message)
    end
  end

  # After a configuration error, a quiet check (its output captured) comes
  # before the next real start, so that a broken environment does not print
  # its traceback to the console at every retry. nil: go ahead.
  defp still_broken(%{config_error: {kind, _}} = data, launch)
       when kind in [:pybridge_not_importable, :worker_pool_failed] do
    modules = if kind == :worker_pool_failed, do: Launcher.worker_modules(), else: ["pybridge"]

    case Launcher.check_import(launch, data.config.env, modules) do
      :ok -> nil
      {:error, _output} -> data.last_error
    end
  end

  defp still_broken(_data, _launch), do: nil

  defp open_port(data, launch) do
    {python, args, env} = Launcher.port_command(launch, data.config)
    port_opts = [:binary, {:packet, 4}, :nouse_stdio, :exit_status, args: args, env: env]

    try do
      Port.open({:spawn_executable, python}, port_opts)
    rescue
      error in ErlangError ->
        reason = error.original

        failure(
          %{data | started_at: nil},
          {:spawn_failed, reason},
          "cannot start the sidecar: spawning #{python} failed: #{inspect(reason)}"
        )
    else
      port ->
        {:os_pid, os_pid} = Port.info(port, :os_pid) || {:os_pid, nil}
        Table.put(data.table, :os_pid, os_pid)
        {id, data} = next_id(%{data | hello_id: nil})
        Port.command(port, Protocol.hello(id, "zarr_bridge #{vsn()}"))

        data = %{data | port: port, os_pid: os_pid, started_at: now_ms(), hello_id: id}
        {:next_state, :starting, data, [{:state_timeout, @hello_timeout, :hello}]}
    end
  end

  defp hello_done(data, {:ok, %{"protocol" => version} = hello}) when is_binary(version) do
    if Protocol.compatible?(version) do
      ready(data, hello)
    else
      fatal(
        data,
        "the sidecar speaks protocol #{version}, this client #{Protocol.version()}; " <>
          "install matching versions of pybridge and zarr_bridge"
      )
    end
  end

  defp hello_done(data, {:error, %Error{code: :protocol_mismatch} = error}) do
    fatal(data, "the sidecar refused protocol #{Protocol.version()}: #{error.message}")
  end

  defp hello_done(data, reply) do
    close_port(data.port)
    text = "the sidecar answered hello with #{inspect(reply, limit: 20)}"
    failure(data, {:hello_failed, reply}, text)
  end

  defp ready(data, hello) do
    limits = Map.get(hello, "limits", %{})

    if data.failures > 0 and data.config_error == nil do
      Logger.info("#{log_name()}: the sidecar is running again (os pid #{data.os_pid})")
    end

    data = %{
      data
      | hello: hello,
        hello_id: nil,
        last_error: nil,
        max_frame_bytes:
          data.config.max_frame_bytes ||
            positive(limits["max_frame_bytes"], @default_max_frame_bytes),
        stream_frame_bytes: positive(limits["stream_frame_bytes"], @default_stream_frame_bytes),
        max_request_bytes: positive(limits["max_request_bytes"], nil)
    }

    route = %{
      os_pid: if(is_integer(hello["pid"]), do: hello["pid"], else: nil),
      handoff?: is_integer(hello["pid"]) and Handoff.usable?(hello),
      handoff_threshold: positive(limits["handoff_threshold"], @default_handoff_threshold),
      max_request_bytes: data.max_request_bytes,
      stream_frame_bytes: data.stream_frame_bytes
    }

    Table.ready(data.table, hello, route)
    {:next_state, :ready, data}
  end

  # A protocol mismatch does not go away by restarting: stop for good.
  defp fatal(data, text) do
    close_port(data.port)
    Logger.error("#{log_name()}: #{text}; not restarting it")

    error = %Error{
      code: :protocol_mismatch,
      message: text,
      details: %{client: Protocol.version()}
    }

    Table.put(data.table, :os_pid, nil)
    data = %{data | port: nil, os_pid: nil, hello_id: nil, fatal_error: error}
    {:next_state, :failed, data}
  end

  defp sidecar_down(data, state, status) do
    Table.down(data.table)
    {reason, text} = Failure.down_reason(data, state, status)

    error = Failure.pending_error(status, reason, text)

    Enum.each(data.pending, fn {_id, {ref, _, _, _}} -> reply(ref, {:error, error}) end)
    Handoff.sweep(data.os_pid)
    failure(%{data | pending: %{}, refs: %{}}, reason, text)
  end

  # Records a failed or ended sidecar and starts the next one now or later.
  defp failure(data, reason, text) do
    now = now_ms()
    lived = if data.started_at, do: now - data.started_at, else: 0
    config? = Failure.config_error?(reason)
    {failures, delay} = Backoff.next(data.failures, lived, config?)
    next = if delay == 0, do: "restarting it now", else: "next attempt in #{delay} ms"

    cond do
      config? and data.config_error == reason ->
        Logger.debug("#{log_name()}: #{text}; #{next} (failure #{failures})")

      config? ->
        Logger.error(
          "#{log_name()}: #{text}; retrying quietly until it starts (failure #{failures})"
        )

      true ->
        Logger.error("#{log_name()}: #{text}; #{next} (failure #{failures})")
    end

    Table.put(data.table, :os_pid, nil)

    data = %{
      data
      | port: nil,
        os_pid: nil,
        started_at: nil,
        hello_id: nil,
        failures: failures,
        last_error: {reason, text},
        config_error: if(config?, do: reason, else: nil)
    }

    if delay == 0 do
      start_sidecar(data)
    else
      data = %{data | retry_at: now + delay}
      {:next_state, :backoff, data, [{{:timeout, :restart}, delay, nil}]}
    end
  end

  ## Requests and replies

  defp send_request(data, ref, body, size, upload) do
    {id, data} = next_id(data)
    header = Protocol.request_header(id)
    frame_size = IO.iodata_length(header) + size
    request_limit = data.max_request_bytes

    cond do
      frame_size > data.max_frame_bytes ->
        reply(ref, {:error, Failure.frame_too_large(frame_size, data.max_frame_bytes)})

        data

      # Refused here, so that a huge upload is not sent only to be dropped.
      upload != nil and request_limit != nil and upload > request_limit ->
        reply(ref, {:error, Failure.too_large(upload, request_limit)})

        data

      true ->
        # A closed port raises; the exit message that follows fails the call.
        try do
          Port.command(data.port, [header | body])
        catch
          :error, :badarg -> :ok
        end

        if upload != nil,
          do: send(ref, {ref, {:upload, id, data.port, data.stream_frame_bytes}})

        %{
          data
          | pending: Map.put(data.pending, id, {ref, [], 0, 0}),
            refs: Map.put(data.refs, ref, id)
        }
    end
  end

  defp next_id(%{next_id: id} = data) do
    cond do
      id > Protocol.max_id() -> next_id(%{data | next_id: 1})
      Map.has_key?(data.pending, id) or id == data.hello_id -> next_id(%{data | next_id: id + 1})
      true -> {id, %{data | next_id: id + 1}}
    end
  end

  defp handle_message({:response, id, reply, _raw}, :starting, %{hello_id: id} = data),
    do: hello_done(data, reply)

  defp handle_message({:response, id, reply, raw}, _state, data) do
    case Map.pop(data.pending, id) do
      {{ref, pieces, frames, bytes}, pending} ->
        deliver(ref, Protocol.complete(reply, pieces, frames, bytes), data.os_pid)
        {:keep_state, %{data | pending: pending, refs: Map.delete(data.refs, ref)}}

      {nil, _pending} ->
        late_reply(id, reply, raw, data)
        :keep_state_and_data
    end
  end

  defp handle_message({:stream_data, id, piece}, _state, data) do
    case data.pending do
      %{^id => {ref, pieces, frames, bytes}} ->
        entry = {ref, [piece | pieces], frames + 1, bytes + byte_size(piece)}
        {:keep_state, %{data | pending: Map.put(data.pending, id, entry)}}

      _cancelled ->
        :keep_state_and_data
    end
  end

  defp handle_message({:notification, "sidecar.failed", %{} = error}, _state, data),
    do: {:keep_state, %{data | failed_note: Error.from_wire(error)}}

  defp handle_message({:notification, method, _params}, _state, _data) do
    Logger.debug("#{log_name()}: ignored a #{inspect(method)} notification from the sidecar")
    :keep_state_and_data
  end

  defp handle_message({:unknown, other}, _state, _data) do
    Logger.warning(
      "#{log_name()}: dropped a message of unknown shape from the sidecar: " <>
        inspect(other, limit: 10, printable_limit: 200)
    )

    :keep_state_and_data
  end

  # A result in a handoff file is read (and removed) by a task of
  # ZarrBridge.Sidecar.Handoff; stream pieces are joined by the caller: this
  # process never copies a large payload.
  defp deliver(ref, {:handoff, result, path, bytes}, os_pid) do
    if Handoff.own_file?(path, os_pid),
      do: Handoff.deliver(ref, result, path, bytes),
      else: reply(ref, Protocol.bad_handoff(%{"path" => path, "bytes" => bytes}))
  end

  defp deliver(ref, message, _os_pid), do: reply(ref, message)

  # A reply for a request that is no longer pending (it was cancelled):
  # drop it, but remove the handoff file it may name.
  defp late_reply(id, reply, raw, data) do
    case raw do
      %{"shm" => %{"path" => path}} when is_binary(path) ->
        if Handoff.own_file?(path, data.os_pid), do: File.rm(path)

      _ ->
        :ok
    end

    case reply do
      {:error, %Error{} = error} when id == 0 ->
        Logger.warning(
          "#{log_name()}: the sidecar reported an error for no request: " <>
            Exception.message(error)
        )

      _ ->
        :ok
    end
  end

  defp reply(ref, message), do: send(ref, {ref, message})

  defp notify(nil, _method, _params), do: :ok

  defp notify(port, method, params) do
    Port.command(port, Protocol.notification(method, params))
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
