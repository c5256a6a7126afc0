defmodule ZarrBridge.Sidecar.Caller do
  @moduledoc false
  # The caller's side of ZarrBridge.Sidecar.call/4, run in the calling
  # process: the request is encoded here, the upload is written here (to
  # the Port as stream frames, or into a handoff file), and the caller
  # enforces its own deadline with an alias (a late reply is dropped by the
  # VM), so the connection process never copies a large payload or waits.
  # The sidecar's limits are read from the connection's table
  # (ZarrBridge.Sidecar.Table): an upload costs no extra
  # message round trip.

  alias ZarrBridge.Error
  alias ZarrBridge.Sidecar.{Handoff, Protocol, Table}

  @doc "Runs one call on the connection `pid` (options already validated)."
  @spec call(pid, String.t(), map, map) :: {:ok, map} | {:error, Error.t()}
  def call(pid, method, params, %{timeout: timeout, data: nil, upload: upload, handoff: handoff}) do
    timeout = timeout || Table.call_timeout(pid)
    deadline = if timeout == :infinity, do: :infinity, else: now_ms() + timeout
    route = route(pid, params, upload, handoff, deadline)
    call(pid, method, params, upload, handoff, route, {deadline, timeout})
  end

  def call(_pid, _method, _params, %{data: data, upload: upload}) when upload != nil,
    do: raise(ArgumentError, "give :data or :upload, not both (data: #{inspect(data, limit: 3)})")

  # A payload whose way is picked here: inline when it fits one stream
  # frame and no handoff is asked for, else as an upload.
  def call(pid, method, params, %{timeout: timeout, data: data, handoff: handoff}) do
    timeout = timeout || Table.call_timeout(pid)
    deadline = if timeout == :infinity, do: :infinity, else: now_ms() + timeout
    route = Table.route(pid) || await_route(pid, deadline)
    bytes = upload_size(data)

    if handoff != true and (route == nil or bytes <= route.stream_frame_bytes) do
      params = Map.put(params, "data", {:bin, data})
      call(pid, method, params, nil, handoff, route, {deadline, timeout})
    else
      call(pid, method, params, data, handoff, route, {deadline, timeout})
    end
  end

  defp call(pid, method, params, upload, handoff, route, {deadline, timeout}) do
    params = result_handoff(params, route)
    upload_bytes = if upload == nil, do: nil, else: upload_size(upload)

    case upload_file(route, upload, upload_bytes, handoff) do
      {:ok, path} ->
        params = Map.put(params, "shm", %{"path" => path, "bytes" => upload_bytes})

        try do
          send_call(pid, method, params, deadline, timeout, nil, nil)
        after
          # Normally gone already: the sidecar removes it when the request ends.
          Handoff.remove(path)
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

  # The sidecar's limits, when this call needs them: read from the table,
  # or, while the sidecar is starting, once it answered hello.
  defp route(pid, params, upload, handoff, deadline) do
    needed? = Map.get(params, "handoff") == true or (upload != nil and handoff != false)

    case needed? and Table.route(pid) do
      false -> nil
      nil -> await_route(pid, deadline)
      route -> route
    end
  end

  defp await_route(pid, deadline) do
    case :gen_statem.call(pid, :info, remaining(deadline)) do
      {:ok, _hello} -> Table.route(pid)
      {:error, _} -> nil
    end
  catch
    :exit, _ -> nil
  end

  # A request for a result by handoff ("handoff" => true) asks for the pipe
  # instead when this client cannot use handoff with the sidecar: the data
  # is the same, only its way differs.
  defp result_handoff(%{"handoff" => true} = params, %{handoff?: false}),
    do: %{params | "handoff" => false}

  defp result_handoff(params, _route), do: params

  defp upload_size(data) do
    IO.iodata_length(data)
  rescue
    ArgumentError -> raise ArgumentError, "the :upload option must be iodata"
  end

  # The upload handoff (PROTOCOL.md section 3): {:ok, path} when the upload
  # was written into a handoff file for the sidecar, :stream when it goes
  # as a stream (handoff off or not usable, below the threshold, over the
  # request limit, or the file could not be written).
  defp upload_file(%{handoff?: true} = route, upload, bytes, handoff)
       when upload != nil and handoff != false do
    with true <- handoff == true or bytes >= route.handoff_threshold,
         # Over the limit the stream path refuses it without writing anything.
         true <- route.max_request_bytes == nil or bytes <= route.max_request_bytes,
         {:ok, path} <- Handoff.write_upload(route.os_pid, upload) do
      {:ok, path}
    else
      _ -> :stream
    end
  end

  defp upload_file(_route, _upload, _bytes, _handoff), do: :stream

  defp send_call(pid, method, params, deadline, timeout, upload, upload_bytes) do
    with {:ok, body, size} <- Protocol.request_body(method, params) do
      ref = :erlang.monitor(:process, pid, alias: :demonitor)
      :gen_statem.cast(pid, {:call, ref, body, size, upload_bytes})
      await(pid, ref, deadline, timeout, upload)
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
    :gen_statem.cast(pid, {:cancel, ref})

    {:error,
     %Error{
       code: :timeout,
       message: "no reply within #{timeout} ms; the request was cancelled",
       details: %{timeout: timeout}
     }}
  end

  defp finish({:ok, _result} = ok), do: ok
  defp finish({:error, %Error{}} = error), do: error
  defp finish({:stream, _result, _pieces} = stream), do: Protocol.join(stream)

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
    # The port closed under us: the sidecar died, and the connection
    # reports :sidecar_exited to this caller.
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
      true = Port.command(port, Protocol.stream_data(id, :lists.reverse(reversed_parts)))
      :ok
    end
  end

  @doc "The error of a call to a sidecar `server` that is not running."
  @spec not_running_error(term) :: Error.t()
  def not_running_error(server) do
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

  defp now_ms, do: System.monotonic_time(:millisecond)
end
