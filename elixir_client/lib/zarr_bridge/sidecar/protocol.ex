defmodule ZarrBridge.Sidecar.Protocol do
  @moduledoc false
  # The frames of protocol/PROTOCOL.md, built and parsed: the Elixir mirror
  # of pybridge/rpc/protocol.py. Pure functions over ZarrBridge.Msgpack; no
  # process, no side effects. A request is
  # [0, id, method, params], a response [1, id, error, result], a
  # notification [2, method, params].

  alias ZarrBridge.{Error, Msgpack}

  @version "1.0"
  @major "1"
  @max_id 0xFFFF_FFFF

  @doc "The protocol version this client speaks."
  @spec version() :: String.t()
  def version, do: @version

  @doc "The largest message id; ids wrap around to 1 after it."
  @spec max_id() :: pos_integer
  def max_id, do: @max_id

  @doc "Whether a sidecar speaking `version` can serve this client."
  @spec compatible?(String.t()) :: boolean
  def compatible?(version), do: match?([@major | _], String.split(version, "."))

  @doc "The `hello` request frame with message id `id`."
  @spec hello(pos_integer, String.t()) :: iodata
  def hello(id, client),
    do: Msgpack.encode!([0, id, "hello", %{"protocol" => @version, "client" => client}])

  @doc """
  The body of a request (method and params, without the id), encoded by the
  caller so that the connection only puts `request_header/1` in front.
  """
  @spec request_body(String.t(), map) :: {:ok, iodata, non_neg_integer} | {:error, Error.t()}
  def request_body(method, params) do
    with {:ok, method_iodata} <- Msgpack.encode(method),
         {:ok, params_iodata} <- Msgpack.encode(params) do
      body = [method_iodata | params_iodata]
      {:ok, body, IO.iodata_length(body)}
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

  @doc "The start of a request frame: a 4-element array, type 0, then `id`."
  @spec request_header(pos_integer) :: iodata
  def request_header(id), do: [<<0x94, 0>> | Msgpack.encode!(id)]

  @doc "A notification frame."
  @spec notification(String.t(), map) :: iodata
  def notification(method, params), do: Msgpack.encode!([2, method, params])

  @doc "One `stream.data` frame of an upload for request `id`."
  @spec stream_data(pos_integer, iodata) :: iodata
  def stream_data(id, data),
    do: Msgpack.encode!([2, "stream.data", %{"id" => id, "data" => {:bin, data}}])

  @typedoc "A frame from the sidecar, parsed."
  @type message ::
          {:response, integer, {:ok, map} | {:error, Error.t()}, term}
          | {:stream_data, term, binary}
          | {:notification, String.t(), term}
          | {:unknown, term}

  @doc """
  Parses a frame from the sidecar. A response carries `{:ok, result}` or
  `{:error, %Error{}}` and the raw result (to find a handoff file in a
  reply no one waits for).
  """
  @spec parse(binary) :: {:ok, message} | {:error, term}
  def parse(frame) do
    with {:ok, message} <- Msgpack.decode(frame), do: {:ok, classify(message)}
  end

  defp classify([1, id, error, result]) when is_integer(id),
    do: {:response, id, response(error, result), result}

  defp classify([2, "stream.data", %{"id" => id, "data" => {:bin, piece}}]),
    do: {:stream_data, id, piece}

  defp classify([2, method, params]) when is_binary(method), do: {:notification, method, params}
  defp classify(other), do: {:unknown, other}

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

  @doc """
  A result whose data came as `frames` stream pieces of `bytes` in all
  (PROTOCOL.md section 3), checked against what it announced:
  `{:stream, result, reversed_pieces}`, `{:handoff, result, path, bytes}`
  for a result in a handoff file (its path not yet checked), the reply
  itself, or an `:invalid_message` error.
  """
  @spec complete({:ok, map} | {:error, Error.t()}, [binary], non_neg_integer, non_neg_integer) ::
          {:ok, map}
          | {:error, Error.t()}
          | {:stream, map, [binary]}
          | {:handoff, map, String.t(), non_neg_integer}
  def complete({:error, _} = error, _pieces, _frames, _bytes), do: error

  def complete({:ok, %{"stream" => stream} = result}, pieces, frames, bytes) do
    case stream do
      %{"frames" => ^frames, "bytes" => ^bytes} ->
        {:stream, Map.delete(result, "stream"), pieces}

      _ ->
        invalid(
          "the stream announced #{inspect(stream)} but #{frames} frames of " <>
            "#{bytes} bytes arrived",
          %{stream: stream, frames: frames, bytes: bytes}
        )
    end
  end

  def complete({:ok, %{"shm" => shm} = result}, [], 0, 0) do
    case shm do
      %{"path" => path, "bytes" => bytes} when is_binary(path) and is_integer(bytes) ->
        {:handoff, Map.delete(result, "shm"), path, bytes}

      _ ->
        bad_handoff(shm)
    end
  end

  def complete({:ok, _result} = ok, [], 0, 0), do: ok

  def complete({:ok, _result}, _pieces, frames, _bytes) do
    invalid(
      "#{frames} stream.data frames arrived for a result that has no \"stream\"",
      %{frames: frames}
    )
  end

  @doc "The error for a result naming a handoff file it may not name."
  @spec bad_handoff(term) :: {:error, Error.t()}
  def bad_handoff(shm) do
    invalid("the result names an invalid shared-memory handoff: #{inspect(shm)}", %{shm: shm})
  end

  @doc "Joins the pieces of a streamed result into its `\"data\"`."
  @spec join({:stream, map, [binary]}) :: {:ok, map}
  def join({:stream, result, [piece]}), do: {:ok, Map.put(result, "data", {:bin, piece})}

  def join({:stream, result, reversed_pieces}) do
    data = IO.iodata_to_binary(:lists.reverse(reversed_pieces))
    {:ok, Map.put(result, "data", {:bin, data})}
  end

  defp invalid(message, details),
    do: {:error, %Error{code: :invalid_message, message: message, details: details}}
end
