defmodule ZarrBridge.Codecs.Batch do
  @moduledoc false
  # The batches of ZarrBridge.Codecs.encode_many/3 and decode_many/3: a
  # batch that fits one request frame travels in it; a bigger one as an
  # upload of the items back to back, cut by "sizes" (PROTOCOL.md section
  # 6), so no batch meets the frame limit. The limits come from the
  # sidecar's hello, read without a message (ZarrBridge.Sidecar.info/2).

  alias ZarrBridge.{Error, Options, Sidecar}

  @doc """
  Runs the batch method `method` with the codec's `params` over `items`;
  `handoff`: ask for the results by handoff; `upload_handoff`: the
  `handoff:` of the upload, when the items go as one.
  """
  @spec run(String.t(), map, [iodata], keyword, boolean, boolean | :auto) ::
          {:ok, [binary | list]} | {:error, Error.t()}
  def run(method, params, items, opts, handoff, upload_handoff) do
    params = if handoff, do: Map.put(params, "handoff", true), else: params

    with {:ok, result} <- send_items(method, params, items, opts, upload_handoff) do
      count = length(items)

      case result do
        %{"items" => out} when is_list(out) and length(out) == count ->
          {:ok, Enum.map(out, &Options.plain/1)}

        # A handoff: one binary holding every item, cut by "sizes".
        %{"data" => {:bin, data}, "sizes" => sizes} when length(sizes) == count ->
          split_items(data, sizes, result)

        other ->
          Options.unexpected(other)
      end
    end
  end

  # Room for each item's msgpack header, and for the rest of the request.
  @item_overhead 9
  @params_room 64 * 1024

  # Batches that fit in one request frame travel in it; bigger ones as an
  # upload of the items back to back, cut by "sizes" (PROTOCOL.md section
  # 6), so no batch meets the frame limit.
  defp send_items(method, params, items, opts, upload_handoff) do
    sizes = Enum.map(items, &item_size/1)
    total = Enum.sum(sizes)
    server = Options.server(opts)
    limits = limits(server)
    request_limit = limits["max_request_bytes"]

    cond do
      is_integer(request_limit) and total > request_limit ->
        batch_limit_error(
          {:error,
           %Error{code: :too_large, message: "", details: %{bytes: total, limit: request_limit}}},
          length(items),
          total
        )

      total + @item_overhead * length(sizes) + @params_room <= frame_limit(limits) ->
        params = Map.put(params, "items", Enum.map(items, &{:bin, &1}))

        case Sidecar.call(server, method, params, Options.call_opts(opts)) do
          # Not sent at all (the client's :max_frame_bytes is smaller): upload them.
          {:error, %Error{code: :frame_too_large}} ->
            upload_items(method, params, items, sizes, opts, upload_handoff)

          result ->
            result
        end

      true ->
        upload_items(method, params, items, sizes, opts, upload_handoff)
    end
  end

  # The limits the sidecar announced in hello (%{} when it cannot be asked).
  defp limits(server) do
    case Sidecar.info(server) do
      {:ok, %{"limits" => %{} = limits}} -> limits
      _ -> %{}
    end
  end

  defp frame_limit(%{"max_frame_bytes" => n}) when is_integer(n) and n > 0, do: n
  # Not known (the sidecar is not running): the items go as an upload,
  # whose call then reports why.
  defp frame_limit(_limits), do: 0

  defp upload_items(method, params, items, sizes, opts, upload_handoff) do
    params = params |> Map.delete("items") |> Map.put("sizes", sizes)
    call_opts = [upload: items, handoff: upload_handoff] ++ Options.call_opts(opts)

    opts
    |> Options.server()
    |> Sidecar.call(method, params, call_opts)
    |> batch_limit_error(length(items), Enum.sum(sizes))
  end

  defp item_size(item) when is_binary(item), do: byte_size(item)

  defp item_size(item) when is_list(item) do
    IO.iodata_length(item)
  rescue
    ArgumentError -> raise ArgumentError, "each item must be a binary or iodata"
  end

  defp item_size(item),
    do: raise(ArgumentError, "each item must be a binary or iodata, got: #{inspect(item)}")

  defp batch_limit_error(
         {:error, %Error{code: :too_large, details: %{limit: limit}} = e},
         n,
         total
       )
       when is_integer(limit) and total > limit do
    {:error,
     %{
       e
       | message:
           "a batch of #{n} items holding #{total} bytes is over the sidecar's " <>
             "max_request_bytes of #{limit}: split it into batches of at most #{limit} " <>
             "bytes, or start the sidecar with a larger :max_request_bytes"
     }}
  end

  defp batch_limit_error(other, _n, _total), do: other

  # Sub-binaries of `data`: no copies.
  defp split_items(data, sizes, result) do
    {items, rest} =
      Enum.map_reduce(sizes, 0, fn
        size, offset
        when is_integer(size) and size >= 0 and offset >= 0 and
               offset + size <= byte_size(data) ->
          {binary_part(data, offset, size), offset + size}

        _size, _offset ->
          {nil, -1}
      end)

    if rest == byte_size(data), do: {:ok, items}, else: Options.unexpected(result)
  end
end
