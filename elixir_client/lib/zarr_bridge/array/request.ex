defmodule ZarrBridge.Array.Request do
  @moduledoc false
  # The requests behind ZarrBridge.Array: params from an array handle and
  # its options (selections, chunk keys, handoff), the call to the sidecar
  # (ZarrBridge.Sidecar.call/4 picks how a payload travels), and the
  # results turned back into NDArrays and updated handles. The handle is
  # taken as a map, so this module does not depend on ZarrBridge.Array.

  alias ZarrBridge.{Dtype, Error, Metadata, NDArray, Options, Sidecar}

  def read_call(array, params, opts) do
    case call(array, "array.read", params, nil, opts) do
      {:ok, %{"shape" => shape, "dtype" => wire} = result} when is_list(shape) ->
        # Fixed-size data comes as "data" (bin); variable-length as "values".
        data = Options.plain(Map.get(result, "data") || Map.get(result, "values"))

        with {:ok, dtype} <- Dtype.from_wire(wire) do
          NDArray.new(data, List.to_tuple(shape), dtype)
        end

      {:ok, other} ->
        Options.unexpected(other)

      {:error, %Error{}} = error ->
        error
    end
  end

  def metadata_result(array, result) do
    case result do
      {:ok, %{"metadata" => wire}} ->
        with {:ok, meta} <- Metadata.from_wire(wire), do: {:ok, %{array | metadata: meta}}

      {:ok, other} ->
        Options.unexpected(other)

      {:error, %Error{}} = error ->
        error
    end
  end

  def append_result(array, result) do
    case result do
      {:ok, %{"metadata" => wire, "region" => %{"start" => start, "stop" => stop}}}
      when is_list(start) and is_list(stop) ->
        with {:ok, meta} <- Metadata.from_wire(wire) do
          {:ok,
           %{
             array: %{array | metadata: meta},
             start: List.to_tuple(start),
             stop: List.to_tuple(stop)
           }}
        end

      {:ok, other} ->
        Options.unexpected(other)

      {:error, %Error{}} = error ->
        error
    end
  end

  def attributes_call(array, method, attributes, opts) do
    Options.check!(opts, [:server, :timeout])

    params =
      array
      |> base_params()
      |> Map.merge(%{"mode" => write_mode(array), "attributes" => Options.text_keys(attributes)})

    case call(array, method, params, nil, opts) do
      {:ok, %{"attributes" => _}} -> :ok
      {:ok, other} -> Options.unexpected(other)
      {:error, %Error{}} = error -> error
    end
  end

  def write_nd(array, %NDArray{} = nd, start, opts) do
    params =
      array
      |> base_params()
      |> Map.merge(%{
        "mode" => write_mode(array),
        "start" => Tuple.to_list(start),
        "shape" => Tuple.to_list(nd.shape)
      })

    case call(array, "array.write", params, nd.data, opts) do
      {:ok, %{"bytes" => _}} -> :ok
      {:ok, other} -> Options.unexpected(other)
      {:error, %Error{}} = error -> error
    end
  end

  def to_ndarray(%NDArray{} = nd, _dtype), do: {:ok, nd}
  def to_ndarray(data, dtype), do: NDArray.from_nested(data, dtype)

  def chunk_key(_array, key) when is_binary(key), do: {:ok, key}
  def chunk_key(array, [_ | _] = key), do: chunk_key(array, text_chunk_key!(key))

  def chunk_key(%{metadata: meta}, coords) when is_tuple(coords) do
    rank = tuple_size(meta.shape)

    cond do
      tuple_size(coords) != rank ->
        {:error,
         %Error{
           code: :invalid_selection,
           message:
             "chunk coordinates #{inspect(coords)} have rank #{tuple_size(coords)}, " <>
               "the array has rank #{rank}",
           details: %{coords: coords, rank: rank}
         }}

      not Enum.all?(Tuple.to_list(coords), &(is_integer(&1) and &1 >= 0)) ->
        raise ArgumentError,
              "chunk coordinates must be non-negative integers, got: #{inspect(coords)}"

      true ->
        {:ok, Metadata.chunk_key(meta, coords)}
    end
  end

  def chunk_key(_array, other),
    do:
      raise(
        ArgumentError,
        "a chunk is a key string or a coordinates tuple, got: #{inspect(other)}"
      )

  defp text_chunk_key!(key) do
    case Options.text(key) do
      text when is_binary(text) ->
        text

      _ ->
        raise ArgumentError,
              "a chunk is a key string or a coordinates tuple, got: #{inspect(key)}"
    end
  end

  def shape!(shape, name) when is_tuple(shape) do
    list = Tuple.to_list(shape)

    if Enum.all?(list, &(is_integer(&1) and &1 >= 0)),
      do: list,
      else:
        raise(
          ArgumentError,
          "#{name} must be a tuple of non-negative integers, got: #{inspect(shape)}"
        )
  end

  def shape!(other, name),
    do:
      raise(
        ArgumentError,
        "#{name} must be a tuple of non-negative integers, got: #{inspect(other)}"
      )

  # Writes go with mode "r+" unless the array was opened read-only: the
  # sidecar then answers `read_only`. (Re-sending "w" would re-create it.)
  def write_mode(%{mode: :r}), do: "r"
  def write_mode(%{}), do: "r+"

  def base_params(array), do: %{"store" => array.store, "path" => array.node}

  def put_tuple(params, _key, nil), do: params
  def put_tuple(params, key, tuple), do: Map.put(params, key, Tuple.to_list(tuple))

  def put_handoff(params, false, _bytes), do: params
  def put_handoff(params, true, _bytes), do: Map.put(params, "handoff", true)

  # A fixed-size result may come by handoff: the sidecar takes it from its
  # handoff threshold on (variable-length values never do).
  def put_handoff(params, :auto, bytes) when is_integer(bytes),
    do: Map.put(params, "handoff", true)

  def put_handoff(params, :auto, _bytes), do: params

  def put_handoff(_params, other, _bytes),
    do: raise(ArgumentError, "handoff must be a boolean, got: #{inspect(other)}")

  defp upload_handoff(flag) when is_boolean(flag) or flag == :auto, do: flag

  defp upload_handoff(other),
    do: raise(ArgumentError, "handoff must be a boolean, got: #{inspect(other)}")

  # The size of the result, from the snapshot; nil when it cannot be known.
  def expected_bytes(%Metadata{shape: shape, dtype: dtype}, start, stop, step) do
    rank = tuple_size(shape)
    start = start || Tuple.duplicate(0, rank)
    stop = stop || shape
    step = step || Tuple.duplicate(1, rank)

    case Dtype.itemsize(dtype) do
      n when is_integer(n) ->
        [Tuple.to_list(start), Tuple.to_list(stop), Tuple.to_list(step)]
        |> Enum.zip_with(fn [a, b, s] -> div(max(b - a, 0) + s - 1, s) end)
        |> Enum.reduce(n, &(&1 * &2))

      _ ->
        nil
    end
  end

  # The `key` option (:start, :stop or :step) checked against the array's
  # shape, with its nil entries resolved: {:ok, nil} when it is not given,
  # {:ok, tuple} or {:error, :invalid_selection}.
  def selection(opts, key, shape) do
    rank = tuple_size(shape)

    case Keyword.get(opts, key) do
      nil ->
        {:ok, nil}

      tuple when is_tuple(tuple) and tuple_size(tuple) == rank ->
        resolve(key, Tuple.to_list(tuple), Tuple.to_list(shape), 0, [])

      tuple when is_tuple(tuple) ->
        invalid_selection(
          "#{key}: #{inspect(tuple)} has #{tuple_size(tuple)} entries, the array has rank #{rank}",
          %{option: key, value: tuple, rank: rank}
        )

      other ->
        invalid_selection(
          "#{key}: expected a tuple with one entry per dimension, got: #{inspect(other)}",
          %{option: key, value: other, rank: rank}
        )
    end
  end

  defp resolve(_key, [], [], _axis, acc), do: {:ok, acc |> Enum.reverse() |> List.to_tuple()}

  defp resolve(key, [value | values], [extent | extents], axis, acc) do
    case entry(key, value, extent) do
      {:ok, resolved} ->
        resolve(key, values, extents, axis + 1, [resolved | acc])

      :error ->
        expected =
          if key == :step,
            do: "a positive integer or nil",
            else: "a non-negative integer or nil"

        invalid_selection(
          "#{key}: axis #{axis} is #{inspect(value)}, expected #{expected}",
          %{option: key, axis: axis, value: value}
        )
    end
  end

  defp entry(:start, nil, _extent), do: {:ok, 0}
  defp entry(:stop, nil, extent), do: {:ok, extent}
  defp entry(:step, nil, _extent), do: {:ok, 1}
  defp entry(:step, value, _extent) when is_integer(value) and value > 0, do: {:ok, value}
  defp entry(:step, _value, _extent), do: :error
  defp entry(_key, value, _extent) when is_integer(value) and value >= 0, do: {:ok, value}
  defp entry(_key, _value, _extent), do: :error

  defp invalid_selection(message, details),
    do: {:error, %Error{code: :invalid_selection, message: message, details: details}}

  # A write's start (the origin when not given) and stop (nil when not given).
  def write_selection(opts, shape) do
    with {:ok, start} <- selection(opts, :start, shape),
         {:ok, stop} <- selection(opts, :stop, shape) do
      {:ok, start || Tuple.duplicate(0, tuple_size(shape)), stop}
    end
  end

  def check_rank(data_shape, array_shape) when tuple_size(data_shape) == tuple_size(array_shape),
    do: :ok

  def check_rank(data_shape, array_shape) do
    invalid_selection(
      "the data has rank #{tuple_size(data_shape)} (shape #{inspect(data_shape)}), " <>
        "the array has rank #{tuple_size(array_shape)}",
      %{data_shape: data_shape, rank: tuple_size(array_shape)}
    )
  end

  # `stop`, when given, must be exactly start + shape.
  def check_stop(nil, _start, _shape), do: :ok

  def check_stop(stop, start, shape) do
    expected = sub(stop, start)

    if expected == shape do
      :ok
    else
      {:error,
       %Error{
         code: :data_size_mismatch,
         message:
           "the data has shape #{inspect(shape)}, the selection #{inspect(start)}..#{inspect(stop)} " <>
             "has shape #{inspect(expected)}",
         details: %{data_shape: shape, selection_shape: expected}
       }}
    end
  end

  def binary_shape(nil, start, array_shape) do
    if Enum.all?(Tuple.to_list(start), &(&1 == 0)) do
      {:ok, array_shape}
    else
      {:error,
       %Error{
         code: :invalid_params,
         message: "writing a binary at a start other than the origin needs stop:",
         details: %{param: "stop"}
       }}
    end
  end

  def binary_shape(stop, start, _array_shape) do
    shape = sub(stop, start)

    if Enum.all?(Tuple.to_list(shape), &(&1 >= 0)),
      do: {:ok, shape},
      else:
        invalid_selection(
          "stop #{inspect(stop)} is before start #{inspect(start)}",
          %{start: start, stop: stop}
        )
  end

  defp sub(a, b) do
    [Tuple.to_list(a), Tuple.to_list(b)]
    |> Enum.zip_with(fn [x, y] -> x - y end)
    |> List.to_tuple()
  end

  def check_dtype(%NDArray{dtype: dtype}, dtype), do: :ok

  def check_dtype(%NDArray{dtype: got}, expected) do
    {:error,
     %Error{
       code: :invalid_params,
       message: "the NDArray has dtype #{inspect(got)}, the array #{inspect(expected)}",
       details: %{param: "data", expected: expected, got: got}
     }}
  end

  # Fixed-size data is bytes (handed over through shared memory or uploaded
  # as a stream when large); variable-length data travels as "values": str
  # for :string, bin for :bytes.
  def call(array, method, params, data, opts) do
    server = Keyword.get(opts, :server, array.server)
    call_opts = Keyword.take(opts, [:timeout])
    handoff = upload_handoff(Keyword.get(opts, :handoff, :auto))

    case data do
      nil ->
        Sidecar.call(server, method, params, call_opts)

      values when is_list(values) ->
        wire = if array.metadata.dtype == :bytes, do: Enum.map(values, &{:bin, &1}), else: values
        Sidecar.call(server, method, Map.put(params, "values", wire), call_opts)

      data ->
        Sidecar.call(server, method, params, [data: data, handoff: handoff] ++ call_opts)
    end
  end
end
