defmodule ZarrBridge.Sidecar.Failure do
  @moduledoc false
  # The errors and log texts of ZarrBridge.Sidecar.Connection: why a
  # sidecar went away, and what callers get meanwhile.

  alias ZarrBridge.Error
  alias ZarrBridge.Sidecar.Launcher

  # The sidecar's exit status when its worker pool cannot start (PROTOCOL.md §1).
  @pool_failed_status 78

  @doc "The error every pending caller gets when the sidecar exits."
  @spec pending_error(integer | nil, term, String.t()) :: Error.t()
  def pending_error(@pool_failed_status = status, reason, text) do
    %Error{
      code: :sidecar_unavailable,
      message: "the sidecar is not running: #{text}",
      details: %{reason: reason, exit_status: status, retry_in_ms: 0}
    }
  end

  def pending_error(status, _reason, _text) do
    %Error{
      code: :sidecar_exited,
      message: "the sidecar exited (#{status_text(status)}) with the request pending",
      details: %{exit_status: status}
    }
  end

  @doc """
  Why the sidecar went away, as `{reason, text}`, from the connection's
  data, its state and the exit status (nil: none).
  """
  @spec down_reason(map, atom, integer | nil) :: {term, String.t()}
  def down_reason(%{failed_note: %Error{} = note}, _state, @pool_failed_status) do
    {{:worker_pool_failed, note.message},
     note.message <>
       " (the sidecar's stderr above has the traceback; a module on its import path, " <>
       "from $PYTHONPATH or the :env option, may shadow numpy, numcodecs or zarr)"}
  end

  def down_reason(_data, _state, @pool_failed_status) do
    {{:worker_pool_failed, nil},
     "the sidecar exited (status #{@pool_failed_status}): its worker pool cannot start " <>
       "(its stderr above says why)"}
  end

  def down_reason(data, :starting, status) do
    case Launcher.check_import(data.launch, data.config.env) do
      {:error, output} ->
        {{:pybridge_not_importable, output},
         "#{data.launch.python} (#{data.launch.why}) cannot import pybridge " <>
           "(#{last_line(output)}); run `mix zarr_bridge.install` in your project, " <>
           "or point the :python option or $ZARR_BRIDGE_PYTHON at a Python that has it"}

      :ok ->
        {{:exit_status, status},
         "the sidecar exited (#{status_text(status)}) before answering hello; " <>
           "its stderr above says why"}
    end
  end

  def down_reason(data, _state, status) do
    uptime = (System.monotonic_time(:millisecond) - data.started_at) / 1000

    {{:exit_status, status},
     "the sidecar exited (#{status_text(status)}) after " <>
       "#{:erlang.float_to_binary(uptime, decimals: 1)} s"}
  end

  defp last_line(output), do: output |> String.split("\n", trim: true) |> List.last("")

  @doc "Whether a failure is one that restarting does not fix (logged once, retried quietly)."
  @spec config_error?(term) :: boolean
  def config_error?({kind, _})
      when kind in [
             :python_not_found,
             :no_python_env,
             :pybridge_not_importable,
             :worker_pool_failed
           ],
      do: true

  def config_error?(_reason), do: false

  @doc "The error of a call while no sidecar runs: `last_error` is `{reason, text}`."
  @spec unavailable_error({term, String.t()}, integer | nil) :: Error.t()
  def unavailable_error({reason, text}, retry_at) do
    retry_in = if retry_at, do: max(retry_at - System.monotonic_time(:millisecond), 0), else: 0

    %Error{
      code: :sidecar_unavailable,
      message: "the sidecar is not running: #{text}; next start attempt in #{retry_in} ms",
      details: %{reason: reason, retry_in_ms: retry_in}
    }
  end

  @doc "A request frame over the client's frame limit."
  @spec frame_too_large(pos_integer, pos_integer) :: Error.t()
  def frame_too_large(bytes, limit) do
    %Error{
      code: :frame_too_large,
      message:
        "the request frame is #{bytes} bytes, over the limit of #{limit}; " <>
          "send large payloads with the :upload option",
      details: %{bytes: bytes, limit: limit}
    }
  end

  @doc "An upload over the sidecar's per-request limit."
  @spec too_large(pos_integer, pos_integer) :: Error.t()
  def too_large(bytes, limit) do
    %Error{
      code: :too_large,
      message:
        "an upload of #{bytes} bytes is over the sidecar's per-request limit of " <>
          "#{limit} bytes (the :max_request_bytes option)",
      details: %{bytes: bytes, limit: limit}
    }
  end

  defp status_text(nil), do: "no exit status"
  defp status_text(status) when status > 128, do: "status #{status}, signal #{status - 128}"
  defp status_text(status), do: "status #{status}"
end
