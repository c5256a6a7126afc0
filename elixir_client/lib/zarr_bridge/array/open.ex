defmodule ZarrBridge.Array.Open do
  @moduledoc false
  # ZarrBridge.create/1 and ZarrBridge.open/1 (their docs say what the
  # options mean): the options checked and turned into "array.create" and
  # "array.open" params, and the result into a ZarrBridge.Array. Here, not
  # in ZarrBridge, so that ZarrBridge.Group can create and open member
  # arrays without depending on the top module (which depends on Group).

  alias ZarrBridge.{Array, CodecSpec, Dtype, Error, Metadata, Options, Sidecar}

  @store_keys [:storage, :path, :node, :server, :timeout]

  @create_keys [
                 :shape,
                 :chunks,
                 :dtype,
                 :compressor,
                 :filters,
                 :fill_value,
                 :order,
                 :dimension_separator,
                 :chunk_key_encoding,
                 :zarr_version,
                 :codecs,
                 :shards,
                 :dimension_names,
                 :attributes,
                 :mode
               ] ++ @store_keys

  @open_keys [:mode | @store_keys]
  @modes [:r, :"r+", :a, :w, :"w-"]

  @doc "See `ZarrBridge.create/1`."
  @spec create(keyword) :: {:ok, Array.t()} | {:error, Error.t()}
  def create(opts) when is_list(opts) do
    Options.check!(opts, @create_keys)
    {storage, path, store} = Options.store!(opts)
    node = Options.node!(opts)
    mode = Options.mode!(Keyword.get(opts, :mode, :"w-"), @modes)
    shape = int_tuple!(opts, :shape, required: true)
    format = Options.zarr_version!(opts, 3)

    chunks =
      int_tuple!(opts, :chunks) ||
        shape |> Tuple.to_list() |> Enum.map(&max(&1, 1)) |> List.to_tuple()

    with {:ok, dtype} <- dtype(opts),
         {:ok, wire_dtype} <- Dtype.to_wire(dtype),
         {:ok, codec_params} <- codec_params(opts, dtype),
         {:ok, optional} <- optional_params(opts, dtype) do
      params =
        %{
          "store" => store,
          "path" => node,
          "mode" => Atom.to_string(mode),
          "zarr_format" => format,
          "shape" => Tuple.to_list(shape),
          "chunks" => Tuple.to_list(chunks),
          "dtype" => wire_dtype
        }
        |> Map.merge(codec_params)
        |> Map.merge(optional)

      opts
      |> Options.server()
      |> Sidecar.call("array.create", params, Options.call_opts(opts))
      |> array_result(opts, {storage, path, store, node}, mode)
    end
  end

  @doc "See `ZarrBridge.open/1`."
  @spec open(keyword) :: {:ok, Array.t()} | {:error, Error.t()}
  def open(opts) when is_list(opts) do
    Options.check!(opts, @open_keys)
    {storage, path, store} = Options.store!(opts)
    node = Options.node!(opts)
    mode = Options.mode!(Keyword.get(opts, :mode, :"r+"), [:r, :"r+", :a])
    # Opening only reads metadata; the mode is kept in the struct for writes.
    params = %{"store" => store, "path" => node, "mode" => "r"}

    opts
    |> Options.server()
    |> Sidecar.call("array.open", params, Options.call_opts(opts))
    |> array_result(opts, {storage, path, store, node}, mode)
  end

  # ------------------------------------------------------------------

  defp array_result(result, opts, {storage, path, store, node}, mode) do
    case result do
      {:ok, %{"metadata" => wire}} ->
        with {:ok, metadata} <- Metadata.from_wire(wire) do
          {:ok,
           %Array{
             metadata: metadata,
             storage: storage,
             path: path,
             node: node,
             mode: mode,
             server: Options.server(opts),
             store: store
           }}
        end

      {:ok, other} ->
        Options.unexpected(other)

      {:error, %Error{}} = error ->
        error
    end
  end

  defp codec_params(opts, dtype) do
    with {:ok, params} <- compressor_param(opts),
         {:ok, params} <- filters_param(opts, dtype, params) do
      case Keyword.fetch(opts, :codecs) do
        {:ok, codecs} when is_list(codecs) ->
          {:ok, Map.put(params, "codecs", codecs)}

        {:ok, nil} ->
          {:ok, params}

        {:ok, other} ->
          raise ArgumentError, "codecs must be a list of v3 codec maps, got: #{inspect(other)}"

        :error ->
          {:ok, params}
      end
    end
  end

  defp compressor_param(opts) do
    case Keyword.fetch(opts, :compressor) do
      {:ok, form} ->
        with {:ok, config} <- CodecSpec.to_config_or_nil(form),
             do: {:ok, %{"compressor" => config}}

      :error ->
        {:ok, %{}}
    end
  end

  defp filters_param(opts, dtype, params) do
    case Keyword.fetch(opts, :filters) do
      {:ok, forms} ->
        with {:ok, configs} <- CodecSpec.to_configs(forms) do
          configs = configs && Enum.map(configs, &CodecSpec.with_dtype(&1, dtype))
          {:ok, Map.put(params, "filters", configs)}
        end

      :error ->
        {:ok, params}
    end
  end

  defp optional_params(opts, dtype) do
    Enum.reduce_while(opts, {:ok, %{}}, fn {key, value}, {:ok, acc} ->
      case optional_param(key, value, opts, dtype) do
        :skip -> {:cont, {:ok, acc}}
        {:ok, wire_key, wire} -> {:cont, {:ok, Map.put(acc, wire_key, wire)}}
        {:error, %Error{}} = error -> {:halt, error}
      end
    end)
  end

  defp optional_param(:fill_value, value, _opts, dtype) do
    with {:ok, wire} <- Metadata.fill_value_to_wire(value, dtype), do: {:ok, "fill_value", wire}
  end

  defp optional_param(:order, order, _opts, _dtype), do: {:ok, "order", order!(order)}

  defp optional_param(:dimension_separator, sep, _opts, _dtype),
    do: {:ok, "dimension_separator", separator!(sep, :dimension_separator)}

  defp optional_param(:chunk_key_encoding, encoding, _opts, _dtype),
    do: {:ok, "chunk_key_encoding", chunk_key_encoding!(encoding)}

  defp optional_param(:shards, _, opts, _dtype),
    do: {:ok, "shards", opts |> int_tuple!(:shards) |> list_or_nil()}

  defp optional_param(:dimension_names, names, _opts, _dtype),
    do: {:ok, "dimension_names", names!(names)}

  defp optional_param(:attributes, attrs, _opts, _dtype),
    do: {:ok, "attributes", Options.attributes!(attrs)}

  defp optional_param(_key, _value, _opts, _dtype), do: :skip

  defp list_or_nil(nil), do: nil
  defp list_or_nil(tuple), do: Tuple.to_list(tuple)

  defp dtype(opts) do
    case Keyword.fetch(opts, :dtype) do
      {:ok, dtype} -> dtype |> Options.text() |> Dtype.normalize()
      :error -> raise ArgumentError, "the :dtype option is required"
    end
  end

  defp int_tuple!(opts, key, flags \\ []) do
    case Keyword.fetch(opts, key) do
      {:ok, tuple} when is_tuple(tuple) ->
        if Enum.all?(Tuple.to_list(tuple), &(is_integer(&1) and &1 >= 0)),
          do: tuple,
          else:
            raise(
              ArgumentError,
              "#{key} must be a tuple of non-negative integers, got: #{inspect(tuple)}"
            )

      {:ok, nil} when flags == [] ->
        nil

      {:ok, other} ->
        raise ArgumentError,
              "#{key} must be a tuple of non-negative integers, got: #{inspect(other)}"

      :error ->
        if flags[:required],
          do: raise(ArgumentError, "the #{inspect(key)} option is required"),
          else: nil
    end
  end

  defp order!(order) when order in ["C", :c, :C], do: "C"
  defp order!(order) when order in ["F", :f, :F], do: "F"

  defp order!(order),
    do: raise(ArgumentError, ~s(order must be "C" or "F", got: #{inspect(order)}))

  defp separator!(sep, _key) when sep in [".", "/"], do: sep

  defp separator!(sep, key),
    do: raise(ArgumentError, ~s(#{key} separator must be "." or "/", got: #{inspect(sep)}))

  defp chunk_key_encoding!(:default), do: chunk_key_encoding!({:default, "/"})
  defp chunk_key_encoding!(:v2), do: chunk_key_encoding!({:v2, "."})

  defp chunk_key_encoding!({name, sep}) when name in [:default, :v2],
    do: %{"name" => Atom.to_string(name), "separator" => separator!(sep, :chunk_key_encoding)}

  defp chunk_key_encoding!(other) do
    raise ArgumentError,
          ~s(chunk_key_encoding must be {:default | :v2, "/" | "."}, got: #{inspect(other)})
  end

  defp names!(nil), do: nil

  defp names!(names) when is_list(names) do
    names
    |> Enum.map(&Options.text/1)
    |> Enum.map(fn
      nil ->
        nil

      name when is_binary(name) ->
        name

      name when is_atom(name) ->
        Atom.to_string(name)

      other ->
        raise ArgumentError, "dimension names must be strings or nil, got: #{inspect(other)}"
    end)
  end

  defp names!(other),
    do: raise(ArgumentError, "dimension_names must be a list, got: #{inspect(other)}")
end
