defmodule ZarrBridge.Sidecar.Handoff do
  @moduledoc false
  # Shared-memory handoff files (PROTOCOL.md section 3), both directions:
  # whether this client may use them with a sidecar, writing an upload file,
  # reading (and removing) a result file under ZarrBridge.HandoffTasks, and
  # sweeping a dead sidecar's files. A handoff file is always
  # /dev/shm/pybridge-<sidecar os pid>-<name without "/">.

  alias ZarrBridge.Error

  @dir "/dev/shm"

  @doc "See `ZarrBridge.Sidecar.handoff_usable?/1`."
  @spec usable?(map) :: boolean
  def usable?(%{"handoff" => %{} = status}) do
    status["usable"] != false and same_dir?(status["dev"]) and same_user?(status["uid"])
  end

  def usable?(hello) when is_map(hello), do: true

  defp same_dir?(dev) when is_integer(dev),
    do: match?({:ok, %File.Stat{major_device: ^dev}}, File.stat(@dir))

  defp same_dir?(_dev), do: true

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

  @doc "Whether `path` is a handoff file of the sidecar with OS pid `os_pid`."
  @spec own_file?(String.t(), integer | nil) :: boolean
  def own_file?(path, os_pid) do
    prefix = "#{@dir}/pybridge-#{os_pid}-"

    String.starts_with?(path, prefix) and
      not String.contains?(
        binary_part(path, byte_size(prefix), byte_size(path) - byte_size(prefix)),
        "/"
      )
  end

  @doc """
  Writes an upload into a new file `/dev/shm/pybridge-<os pid>-up-<unique>`
  with mode 0600 and no moment at which another user could open it: the
  file is created inside a fresh directory that only this user can enter,
  made 0600 there, then hard-linked to its name (link(2) fails if the name
  exists, so the file is created exclusively) before the directory goes;
  the bytes are written afterwards through the descriptor. (Erlang creates
  files with mode 0666 minus the umask, and has no way to pass a mode.)
  """
  @spec write_upload(integer, iodata) :: {:ok, String.t()} | :error
  def write_upload(os_pid, data) do
    path = "#{@dir}/pybridge-#{os_pid}-up-#{System.pid()}.#{System.unique_integer([:positive])}"
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

  @doc "Removes a file (nothing happens when it is gone)."
  @spec remove(String.t()) :: :ok
  def remove(path) do
    _ = :file.delete(path, [:raw])
    :ok
  end

  @doc """
  Reads the result file `path` of `bytes` bytes, sends `{ref, reply}` to
  the caller's alias `ref`, then removes the file. This runs in a task
  under `ZarrBridge.HandoffTasks`, so that the connection never waits for
  a large read and the file goes away even when the caller has given up
  (its alias then drops the reply).
  """
  @spec deliver(reference, map, String.t(), non_neg_integer) :: :ok
  def deliver(ref, result, path, bytes) do
    job = fn ->
      send(ref, {ref, result(result, path, bytes, read_raw(path, bytes))})
      # Removing the file frees its pages, which takes a while for a large
      # one (about 30 ms for 256 MiB): done after the reply.
      remove(path)
    end

    case Task.Supervisor.start_child(ZarrBridge.HandoffTasks, job) do
      {:ok, _pid} -> :ok
      {:error, _} -> job.()
    end
  catch
    # No ZarrBridge application (a sidecar started by hand without it).
    :exit, _ -> deliver_here(ref, result, path, bytes)
  end

  defp deliver_here(ref, result, path, bytes) do
    send(ref, {ref, result(result, path, bytes, read_raw(path, bytes))})
    remove(path)
  end

  defp result(result, path, bytes, read) do
    case read do
      {:ok, data} when byte_size(data) == bytes ->
        {:ok, Map.put(result, "data", {:bin, data})}

      {:ok, data} ->
        wrong_size(path, "#{byte_size(data)}", bytes)

      {:longer, _} ->
        wrong_size(path, "more than #{bytes}", bytes)

      {:error, posix} ->
        {:error,
         %Error{
           code: :internal,
           message: "cannot read the shared-memory handoff #{path}: #{:file.format_error(posix)}",
           details: %{path: path, reason: posix}
         }}
    end
  end

  defp wrong_size(path, held, bytes) do
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

  @doc """
  Removes every handoff file of the sidecar with OS pid `os_pid`, and the
  staging directory of an upload whose writer died half-way
  (`File.rm_rf/1` removes a symlink, not its target).
  """
  @spec sweep(integer | nil) :: :ok
  def sweep(nil), do: :ok

  def sweep(os_pid) do
    "#{@dir}/pybridge-#{os_pid}-*"
    |> Path.wildcard()
    |> Enum.each(&File.rm_rf/1)
  end
end
